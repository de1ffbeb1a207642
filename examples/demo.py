"""The aiotp tour, run by `make demo`.

Each part is a runnable example of its own in this folder; this script runs them in order inside
one Runtime, prints what happens, and exits non-zero if any part fails or any invariant breaks.
It ends with the guarantees table: for each situation, what the caller gets.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import actors_tour
import guarantees_tour
import plan_pipeline
import pool_process
import pool_thread
import reliability_tour
import supervision_tree

import aiotp

PARTS: list[tuple[str, Any]] = [
    ("Actors, links and monitors", actors_tour.main),
    ("Supervision trees", supervision_tree.main),
    ("Thread pools, thread safety and session affinity", pool_thread.main),
    ("Process pools: a worker SIGKILLed under load", pool_process.main),
    ("Reliability: a tree of pools under a burst of calls and kills", reliability_tour.main),
    (
        "Guarantees: a killed callee, a pool call timing out, a worker SIGKILLed",
        guarantees_tour.main,
    ),
    ("Plans: an ETL plan over a process pool, fan-out/fan-in, its timeline", plan_pipeline.main),
]


def say(line: str, end: str = "\n") -> None:
    print(f"   {line}", end=end, flush=True)


async def tour(rt: aiotp.Runtime) -> int:
    failures = 0
    for title, part in PARTS:
        print(f"\n== {title}")
        started = time.perf_counter()
        try:
            await part(rt, say=say)
        except Exception as exc:
            failures += 1
            print(f"   FAILED: {type(exc).__name__}: {exc}")
        else:
            print(f"   ({time.perf_counter() - started:.2f} s)")
    return failures


if __name__ == "__main__":
    # Crash reports go to the log, as OTP's do; the tour prints its own account instead.
    logging.basicConfig(level=logging.CRITICAL)
    started = time.perf_counter()
    failed = aiotp.run(tour)
    took = time.perf_counter() - started
    print("\n== What the caller gets (README: Guarantees)")
    for line in guarantees_tour.table():
        print(f"   {line}")
    print(f"\n{'all parts ok' if not failed else f'{failed} part(s) failed'} in {took:.1f} s")
    sys.exit(1 if failed else 0)
