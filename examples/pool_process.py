"""A pool of 4 process workers under load; one is SIGKILLed mid-load and the pool heals.

The adapter lives in its own module (examples/ml_adapter.py) so worker processes can import it
by path: ``"ml_adapter:MLAdapter"``. Every call ends with a result or a typed error.
"""

from __future__ import annotations

import asyncio
import collections
import os
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


async def main(rt: aiotp.Runtime, say: Any = print) -> dict[str, int]:
    started = time.perf_counter()
    await rt.start_pool("ml", "ml_adapter:MLAdapter", profile="process", size=4)
    say(f"pool 'ml' of 4 process workers ready in {(time.perf_counter() - started) * 1000:.0f} ms")
    say(f"predict(2.0) = {await rt.execute('ml', 'predict', {'x': 2.0})}")
    say(f"a generator tool streams: {[i async for i in rt.stream('ml', 'count', {'n': 5})]}")
    try:
        await rt.execute("ml", "fail", {"message": "bad input"})
    except aiotp.ToolError as exc:
        say(f"a tool that raises gives ToolError: {exc.type_name}: {exc.message}")

    outcomes: collections.Counter[str] = collections.Counter()

    async def caller(n: int) -> None:
        for i in range(25):
            try:
                await rt.execute("ml", "slow_predict", {"x": i, "seconds": 0.01}, timeout=10)
            except aiotp.AiotpError as exc:
                outcomes[type(exc).__name__] += 1
            else:
                outcomes["ok"] += 1

    load = asyncio.gather(*(caller(n) for n in range(16)))
    await asyncio.sleep(0.1)
    victim = rt.pool_stats("ml").workers[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.perf_counter()
    say(f"SIGKILLed worker {victim.worker_id} (pid {victim.pid}) in the middle of the load")

    async def healed() -> float:
        while True:
            stats = rt.pool_stats("ml")
            pids = {w.pid for w in stats.workers}
            if stats.live == 4 and victim.pid not in pids:
                return time.perf_counter() - killed_at
            await asyncio.sleep(0.001)

    heal_time, _ = await asyncio.gather(healed(), load)
    stats = rt.pool_stats("ml")
    say(f"400 calls: {dict(outcomes)}; every call got a result or a typed error")
    say(
        f"pool back to {stats.live} workers {heal_time * 1000:.0f} ms after the kill "
        f"(restarts: {stats.restarts})"
    )
    await rt.stop_pool("ml")
    return dict(outcomes)


if __name__ == "__main__":
    result = aiotp.run(main)
    sys.exit(0 if sum(result.values()) == 400 else 1)
