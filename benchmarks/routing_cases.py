"""The routing cases of bench_pool: affinity modes, dispatch cost against pool size, retries.

- strict vs hint: 6 sessions on 3 single-capacity workers, every session calling at once,
  each call updating its session's state in the worker. Strict affinity queues a session's
  calls behind its own worker; hint sends them wherever a worker is free. The ratio is what
  exact placement costs in throughput.
- dispatch: the dispatcher alone (no worker behind it), one checkout and checkin with every
  worker but one busy: the case a linear scan pays most for. 250 workers against 4.
- retries: the success path of a call with ``retry=aiotp.Retry()`` against one without.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiotp
from aiotp.workers.dispatcher import Dispatcher, WorkerSlot

__all__ = ["dispatch_ns", "retry_us", "sessions_us"]

ADAPTER = "echo_adapter:Echo"


async def sessions_us(mode: str, profile: str, per_session: int) -> float:
    """Microseconds per call, 6 sessions x `per_session` calls on 3 workers at once."""
    async with aiotp.Runtime() as rt:
        await rt.start_pool(
            "b", ADAPTER, profile=profile, size=3, heartbeat=None, affinity=mode, max_queue=100
        )

        async def session(k: int) -> None:
            for _ in range(per_session):
                await rt.execute("b", "count_in_session", {}, session=f"s{k}", timeout=30)

        await asyncio.gather(*(session(k) for k in range(6)))  # warm: pins placed
        t0 = time.perf_counter()
        await asyncio.gather(*(session(k) for k in range(6)))
        return (time.perf_counter() - t0) / (6 * per_session) * 1e6


class _Handle:
    """Just enough of a worker handle for the dispatcher: an id, a capacity, a liveness."""

    def __init__(self, worker_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.worker_id = worker_id
        self.capacity = 1
        self.pid = None
        self.closed: asyncio.Future[Any] = loop.create_future()


async def dispatch_ns(workers: int, n: int) -> float:
    """Nanoseconds per checkout + checkin with all workers but one busy."""
    loop = asyncio.get_running_loop()
    d = Dispatcher("bench", max_queue=10, checkout_timeout=5.0)
    for i in range(workers):
        d.add(WorkerSlot(_Handle(f"w{i}", loop), i))
    for _ in range(workers - 1):
        d.checkout_nowait()  # busy, and stays busy
    t0 = time.perf_counter_ns()
    for _ in range(n):
        slot = d.checkout_nowait()
        assert slot is not None
        d.checkin(slot)
    return (time.perf_counter_ns() - t0) / n


async def retry_us(with_retry: bool, n: int) -> float:
    """Microseconds per sequential call of an idempotent tool on one thread worker."""
    retry = aiotp.Retry() if with_retry else None
    async with aiotp.Runtime() as rt:
        await rt.start_pool("b", ADAPTER, profile="thread", size=1, heartbeat=None, retry=retry)
        await rt.execute("b", "echo_again", {"value": 0})
        t0 = time.perf_counter()
        for i in range(n):
            await rt.execute("b", "echo_again", {"value": i})
        return (time.perf_counter() - t0) / n * 1e6
