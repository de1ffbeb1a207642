"""The aiotp tour: run by `make demo`.

Each part is a runnable example of its own in this folder; this script runs them in order inside
one Runtime and exits non-zero if any part fails.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import actors_tour

import aiotp

PARTS: list[tuple[str, Any]] = [
    ("Actors, links and monitors", actors_tour.main),
]


async def tour(rt: aiotp.Runtime) -> int:
    failures = 0
    for title, part in PARTS:
        print(f"\n== {title}")
        started = time.perf_counter()
        try:
            await part(rt, say=lambda line: print(f"   {line}"))
        except Exception as exc:
            failures += 1
            print(f"   FAILED: {exc!r}")
        else:
            print(f"   ({time.perf_counter() - started:.2f} s)")
    return failures


if __name__ == "__main__":
    # Crash reports go to the log as OTP's do; the tour prints its own account instead.
    logging.basicConfig(level=logging.CRITICAL)
    failed = aiotp.run(tour)
    print(f"\n{'all parts ok' if not failed else f'{failed} part(s) failed'}")
    sys.exit(1 if failed else 0)
