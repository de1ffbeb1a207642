"""``python -m aiotp``: the command line (see `aiotp.ops.cli`)."""

from aiotp.ops.cli import main

raise SystemExit(main())
