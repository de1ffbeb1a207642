"""Retries of idempotent tools, the max_requests bound, and what pool_stats reports.

Real worker processes die for real here (``os._exit`` inside a tool), and the tests check
what the caller saw, not what the code meant to do.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import aiotp
from aiotp.workers import PoolConfig
from aiotp.workers.api import registry

STATEFUL = "session_adapters:Stateful"
ECHO = "pool_adapters:Echo"
CRASH = "worker p-"  # the WARNING a dead worker logs is expected here, never an ERROR


@pytest.fixture(params=["thread", "process"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_an_idempotent_tool_is_retried_after_its_worker_died(
    rt: aiotp.Runtime, tmp_path: Path
) -> None:
    await rt.start_pool("p", STATEFUL, profile="process", size=2, retry=aiotp.Retry(attempts=3))
    marker = tmp_path / "crashed"
    worker = await rt.execute("p", "crash_once", {"marker": str(marker)}, timeout=20)
    assert marker.exists()  # the first attempt really killed a worker
    assert worker.split(":")[0].isdigit()
    stats = rt.pool_stats("p")
    assert stats.retries == 1


async def test_a_tool_not_declared_idempotent_is_never_retried(
    rt: aiotp.Runtime, tmp_path: Path
) -> None:
    await rt.start_pool("p", STATEFUL, profile="process", size=2, retry=aiotp.Retry(attempts=5))
    marker = tmp_path / "crashed"
    with pytest.raises(aiotp.WorkerCrashed):
        await rt.execute("p", "crash_once_unsafe", {"marker": str(marker)}, timeout=20)
    assert rt.pool_stats("p").retries == 0


async def test_without_retry_an_idempotent_tool_crash_surfaces(
    rt: aiotp.Runtime, tmp_path: Path
) -> None:
    await rt.start_pool("p", STATEFUL, profile="process", size=2)
    with pytest.raises(aiotp.WorkerCrashed):
        await rt.execute("p", "crash_once", {"marker": str(tmp_path / "m")}, timeout=20)
    # A per-call Retry overrides the pool's none.
    marker = tmp_path / "m2"
    await rt.execute("p", "crash_once", {"marker": str(marker)}, retry=aiotp.Retry(), timeout=20)
    assert marker.exists()


async def test_retries_stay_inside_the_call_timeout(rt: aiotp.Runtime, tmp_path: Path) -> None:
    """A backoff longer than what is left of the timeout is not slept: the crash is raised."""
    await rt.start_pool("p", STATEFUL, profile="process", size=2)
    slow = aiotp.Retry(attempts=3, backoff=30.0, max_backoff=30.0, jitter=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(aiotp.WorkerCrashed):
        await rt.execute("p", "crash_once", {"marker": str(tmp_path / "m")}, retry=slow, timeout=10)
    assert loop.time() - started < 10


async def test_strict_sessions_are_not_retried_their_state_is_gone(
    rt: aiotp.Runtime, tmp_path: Path
) -> None:
    await rt.start_pool(
        "p", STATEFUL, profile="process", size=2, affinity="strict_queue", retry=aiotp.Retry()
    )
    await rt.execute("p", "bump", {}, session="a")
    with pytest.raises(aiotp.SessionWorkerLost):
        await rt.execute("p", "crash_once", {"marker": str(tmp_path / "m")}, session="a")
    assert (await rt.execute("p", "bump", {}, session="a"))["count"] == 1


def test_retry_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="attempts"):
        aiotp.Retry(attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        aiotp.Retry(backoff=-1)
    assert list(aiotp.Retry(attempts=4, backoff=0.1, jitter=False).delays()) == [0.1, 0.2, 0.4]
    with pytest.raises(TypeError, match=r"aiotp\.Retry"):
        PoolConfig("p", ECHO, retry=3)
    with pytest.raises(TypeError, match="idempotent"):
        aiotp.tool(idempotent="yes")(lambda self: None)  # type: ignore[arg-type]


async def test_max_requests_is_a_bound(rt: aiotp.Runtime, profile: str) -> None:
    """Today a worker with max_requests=5 served 29 back-to-back requests before its
    replacement took over; now none starts more than 5, and every request is served."""
    await rt.start_pool("p", STATEFUL, profile=profile, size=1, max_requests=5, heartbeat=None)
    served: collections.Counter[str] = collections.Counter()
    for _ in range(29):
        served[await rt.execute("p", "where", {}, timeout=20)] += 1
    assert max(served.values()) <= 5, served
    assert sum(served.values()) == 29 and len(served) >= 6
    await wait_until(lambda: rt.pool_stats("p").live == 1)
    assert all(w.started <= 5 for w in rt.pool_stats("p").workers)


async def test_max_requests_bound_holds_under_concurrency(rt: aiotp.Runtime) -> None:
    await rt.start_pool("p", STATEFUL, profile="thread", size=3, max_requests=4, heartbeat=None)
    served = collections.Counter(
        await asyncio.gather(*(rt.execute("p", "where", {}, timeout=20) for _ in range(60)))
    )
    assert max(served.values()) <= 4, served


async def test_stats_count_cancelled_streams_and_queue_timeouts(
    rt: aiotp.Runtime, profile: str
) -> None:
    await rt.start_pool("p", ECHO, profile=profile, size=1, checkout_timeout=0.2, heartbeat=None)
    async for item in rt.stream("p", "count", {"n": 1000}):
        if item == 3:
            break  # the consumer leaves early
    await wait_until(lambda: rt.pool_stats("p").busy == 0)
    stats = rt.pool_stats("p")
    assert stats.cancelled == 1 and stats.errors == 0, stats
    blocker = asyncio.ensure_future(rt.execute("p", "sleep", {"seconds": 1.0}))
    await wait_until(lambda: rt.pool_stats("p").busy == 1)
    with pytest.raises(aiotp.CheckoutTimeout):
        await rt.execute("p", "echo", {"value": 1})
    await blocker
    stats = rt.pool_stats("p")
    assert stats.queue_timeouts == 1 and stats.saturated >= 1
    assert stats.latency.count >= 1 and stats.latency.p99 is not None
    assert stats.latency.p99 >= 1.0  # the one-second sleep is in there
    assert stats.queue_wait.count >= 2


def test_histogram_percentiles() -> None:
    from aiotp.workers.pool_stats import Histogram

    h = Histogram()
    assert h.percentile(50) is None
    for _ in range(98):
        h.record(0.001)
    h.record(0.5)
    h.record(200.0)
    p50, p99, p100 = h.percentile(50), h.percentile(99), h.percentile(100)
    assert p50 is not None and 0.001 <= p50 < 0.002
    assert p99 is not None and 0.5 <= p99 < 0.9
    assert p100 == float("inf")


async def test_dispatch_touches_no_more_workers_than_its_bucket(rt: aiotp.Runtime) -> None:
    """A checkout on a big pool does not walk the pool: with 64 idle workers, 200 sequential
    requests never look at a busy one (each takes from the idle bucket in O(1))."""
    await rt.start_pool("p", ECHO, profile="thread", size=64, heartbeat=None)
    pool = registry(rt).get("p")
    looked: list[int] = []
    original = pool.dispatcher.checkout_nowait

    def counting() -> Any:
        free = pool.dispatcher._free
        looked.append(sum(1 for bucket in free if bucket))
        return original()

    pool.dispatcher.checkout_nowait = counting  # type: ignore[method-assign]
    for i in range(200):
        assert await rt.execute("p", "echo", {"value": i}) == i
    assert looked and max(looked) == 1  # one non-empty bucket: the idle one
