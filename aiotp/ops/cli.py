"""The ``aiotp`` command line (also ``python -m aiotp``): run an application, look at one.

- ``aiotp run module:app`` starts an `aiotp.Application` and keeps it up until SIGTERM or SIGINT
  (graceful shutdown in reverse start order, exit 0; a second signal forces a fast exit).
- ``aiotp top --socket PATH`` is a live terminal view of a running application (its control
  socket); ``aiotp tree --socket PATH`` prints the same picture once, or as JSON.

Each command's implementation is imported only when it runs, so that ``aiotp tree`` does not pay
for the runtime and ``aiotp run`` does not pay for the terminal view.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiotp", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start an application and run it until SIGTERM/SIGINT")
    run.add_argument("app", help="the application, as module:attribute (an aiotp.Application)")
    run.add_argument(
        "--log-level", default="INFO", help="root log level (DEBUG, INFO, WARNING, ...)"
    )
    run.add_argument(
        "--log-format", choices=("plain", "json"), default="plain", help="plain text or JSON lines"
    )
    run.add_argument(
        "--control-socket", metavar="PATH", help="serve the snapshot on this unix socket"
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT (0 picks a free port)",
    )
    run.add_argument(
        "--shutdown-timeout", type=float, metavar="SECONDS", help="override the app's own"
    )

    for name, text in (("top", "live view of a running application"), ("tree", "print it once")):
        view = commands.add_parser(name, help=text)
        view.add_argument("--socket", required=True, metavar="PATH", help="its control socket")
        if name == "tree":
            view.add_argument("--json", action="store_true", help="the raw snapshot as JSON")
        else:
            view.add_argument(
                "--interval", type=float, default=0.25, help="seconds between refreshes"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from aiotp.ops.runner import run_command

        return run_command(args)
    from aiotp.ops.view import top_command, tree_command

    return top_command(args) if args.command == "top" else tree_command(args)
