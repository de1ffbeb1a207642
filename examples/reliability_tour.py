"""The promise, shown: a supervision tree holding a process pool and a thread pool, sessions with
affinity, a burst of calls while this script kills workers, and a report at the end.

Invariants checked (an AssertionError, and a non-zero exit, if any breaks):
- every call ends with a result or a typed aiotp error; results + errors == calls issued;
- sessions stay on their worker while it lives;
- both pools are back to full size after the last kill.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)

import aiotp  # noqa: E402

CALLS = 4_000
CALLERS = 100
KILLS = 6


async def main(rt: aiotp.Runtime, say: Any = print) -> dict[str, Any]:
    tree = await rt.spawn(
        aiotp.Supervisor,
        [
            aiotp.pool_spec(
                "ml",
                "ml_adapter:MLAdapter",
                profile="process",
                size=4,
                threads_per_worker=2,
                heartbeat=aiotp.Heartbeat(interval=0.5, timeout=1.0, max_missed=2),
            ),
            aiotp.pool_spec("io", "ml_adapter:MLAdapter", profile="thread", size=2),
        ],
        name="services",
    )
    say("tree 'services': " + ", ".join(f"{c.id} ({c.type})" for c in await tree.which_children()))

    # Sessions: each user's requests stick to one worker while it lives.
    homes = {}
    for user in ("alice", "bob", "carol"):
        pid = await rt.execute("ml", "whoami", {}, session=user)
        again = await rt.execute("ml", "whoami", {}, session=user)
        assert pid == again, f"session {user} moved from {pid} to {again} with no failure"
        homes[user] = rt.sessions.get(user).last_worker_id
    say(f"sessions and their workers: {homes}")

    outcomes: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    done = 0
    rng = random.Random(7)

    async def caller(n: int) -> None:
        nonlocal done
        pool = "ml" if n % 4 else "io"
        for i in range(CALLS // CALLERS):
            t0 = time.perf_counter()
            try:
                await rt.execute(pool, "slow_predict", {"x": i, "seconds": 0.002}, timeout=10)
            except aiotp.AiotpError as exc:
                outcomes[type(exc).__name__] += 1
            except Exception as exc:  # an untyped error breaks the promise
                outcomes[f"UNTYPED {type(exc).__name__}"] += 1
            else:
                outcomes["ok"] += 1
            latencies.append(time.perf_counter() - t0)
            done += 1

    async def progress() -> None:
        while done < CALLS:
            say(f"  ... {done}/{CALLS} calls, {dict(outcomes)}", end="\r")
            await asyncio.sleep(0.25)

    heal_times: list[float] = []

    async def killer() -> int:
        kills = 0
        while kills < KILLS and done < CALLS * 0.8:
            await asyncio.sleep(0.15)
            workers = [w for w in rt.pool_stats("ml").workers if w.pid]
            victim = rng.choice(workers)
            assert victim.pid is not None
            try:
                os.kill(victim.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed_at = time.perf_counter()
            kills += 1
            while True:  # time to heal: back to 4 live workers, the victim replaced
                stats = rt.pool_stats("ml")
                if stats.live == 4 and victim.pid not in {w.pid for w in stats.workers}:
                    break
                await asyncio.sleep(0.001)
            heal_times.append(time.perf_counter() - killed_at)
        return kills

    started = time.perf_counter()
    ticker = asyncio.create_task(progress())
    kills, *_ = await asyncio.gather(killer(), *(caller(n) for n in range(CALLERS)))
    ticker.cancel()
    elapsed = time.perf_counter() - started
    assert rt.pool_stats("ml").live == 4 and rt.pool_stats("io").live == 2, "pools not whole"
    stats = rt.pool_stats("ml")
    untyped = [k for k in outcomes if k.startswith("UNTYPED")]
    assert not untyped, f"untyped failures: {untyped}"
    assert sum(outcomes.values()) == CALLS, f"lost calls: {sum(outcomes.values())} of {CALLS}"
    latencies.sort()
    report = {
        "calls": CALLS,
        "ok": outcomes["ok"],
        "typed_errors": {k: v for k, v in outcomes.items() if k != "ok"},
        "workers_killed": kills,
        "restarts": stats.restarts,
        "max_time_to_heal_ms": round(max(heal_times, default=0.0) * 1000, 1),
        "p99_latency_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "max_latency_ms": round(latencies[-1] * 1000, 1),
        "calls_per_s": round(CALLS / elapsed),
    }
    say(" " * 80)
    say(f"report: {report}")
    await rt.stop(tree)
    return report


if __name__ == "__main__":
    aiotp.run(main)
