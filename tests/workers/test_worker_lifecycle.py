"""Worker lifecycle: heartbeats that report instead of kill, recycling on memory, and recycling
that retries when a replacement fails to start. Real threads and processes, no mocks."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from lifecycle_adapters import COUNTER_ENV, FAIL_ENV

import aiotp
from aiotp import telemetry
from aiotp.runtime.clock import VirtualClock
from aiotp.workers import PoolConfig
from aiotp.workers.memory import SAMPLE_EVERY

LIFECYCLE = "lifecycle_adapters:Lifecycle"
FLAKY = "lifecycle_adapters:FlakyStart"
_ids = itertools.count()


@pytest.fixture(params=["thread", "process"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def events() -> Iterator[list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]]]:
    """Every ("aiotp", "pool") telemetry event emitted while the test runs."""
    seen: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
    handler_id = f"lifecycle-{next(_ids)}"
    telemetry.attach(
        handler_id, ("aiotp", "pool"), lambda e, m, md: seen.append((tuple(e), dict(m), dict(md)))
    )
    yield seen
    telemetry.detach(handler_id)


def named(events: list[Any], *suffix: str) -> list[Any]:
    return [e for e in events if e[0][2:] == suffix]


class Traffic:
    """Requests sent back to back while a worker is replaced: none may fail."""

    def __init__(self, rt: aiotp.Runtime, pool: str) -> None:
        self.rt = rt
        self.pool = pool
        self.served = 0
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            n = self.served
            assert await self.rt.execute(self.pool, "echo", {"value": n}, timeout=30) == n
            self.served += 1
            await asyncio.sleep(0.005)

    async def stop(self) -> int:
        self._stop.set()
        await self._task  # re-raises the first failed request
        return self.served


# -- Heartbeat(dependent=False) -------------------------------------------------------------


def test_heartbeat_dependent_must_be_a_bool() -> None:
    assert aiotp.Heartbeat().dependent is True
    assert aiotp.Heartbeat(dependent=False).dependent is False
    with pytest.raises(TypeError, match="dependent"):
        aiotp.Heartbeat(dependent=0)  # type: ignore[arg-type]


async def test_unresponsive_independent_worker_is_reported_kept_and_recovers(
    rt: aiotp.Runtime,
    virtual_clock: VirtualClock,
    profile: str,
    events: list[Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Heartbeats run on the virtual clock: misses come only when the test crosses a deadline,
    # never from a loaded machine's scheduling noise. A deadline crossed while the ping is in
    # flight counts once that ping has had its real grace (min(timeout, cap) s): wait for it.
    hb = aiotp.Heartbeat(interval=1.0, timeout=2.0, max_missed=2, dependent=False)
    await rt.start_pool("p", LIFECYCLE, profile=profile, size=1, heartbeat=hb)
    before = await rt.execute("p", "whoami", {})
    worker = rt.pool_stats("p").workers[0]
    release = tmp_path / "release"
    caplog.set_level(logging.INFO, logger="aiotp.pool")
    missed = lambda: len(named(events, "heartbeat", "missed"))  # noqa: E731

    # The worker's only thread is held until we release it: every ping in between is missed.
    blocked = asyncio.ensure_future(
        rt.execute("p", "block_until", {"path": str(release)}, timeout=60)
    )
    await wait_until(lambda: rt.pool_stats("p").busy == 1)  # pings queue behind it now
    # Ticks at 1, 2, 3, ... s; the first misses at 3 s, the second (max_missed) at 4 s.
    await virtual_clock.advance(3.5)
    await wait_until(lambda: missed() == 1)
    await virtual_clock.advance(0)  # anything else due would have run now
    assert missed() == 1
    assert not named(events, "heartbeat", "unhealthy")
    await virtual_clock.advance(0.5)
    await wait_until(lambda: named(events, "heartbeat", "unhealthy"))
    assert missed() == hb.max_missed  # really missed, not merely slow once
    # Keep it unhealthy for more misses (the ticks of 3 to 6 s): still one report, and nobody
    # kills it.
    await virtual_clock.advance(4.0)
    await wait_until(lambda: missed() == 3 * hb.max_missed)
    assert not blocked.done()
    assert len(named(events, "heartbeat", "unhealthy")) == 1
    (_, measurements, metadata) = named(events, "heartbeat", "unhealthy")[0]
    assert metadata["worker_id"] == worker.worker_id and metadata["pool"] == "p"
    assert metadata["pid"] == worker.pid and measurements["missed"] >= hb.max_missed
    warnings = [r for r in caplog.records if "keeping it (dependent=False)" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert worker.worker_id in warnings[0].getMessage()

    release.touch()
    assert await blocked is True  # the request it was running was not lost either
    await wait_until(lambda: named(events, "heartbeat", "recovered"), timeout=30)
    recovered = [r for r in caplog.records if "answers heartbeats again" in r.getMessage()]
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO

    # Same worker, same process: never replaced, never restarted.
    assert await rt.execute("p", "whoami", {}) == before
    stats = rt.pool_stats("p")
    assert [w.worker_id for w in stats.workers] == [worker.worker_id]
    assert stats.workers[0].pid == worker.pid
    assert stats.restarts == 0 and stats.recycled == 0
    assert not named(events, "worker", "terminated")


async def test_dependent_heartbeat_still_replaces_a_hung_worker(
    rt: aiotp.Runtime, virtual_clock: VirtualClock, events: list[Any], tmp_path: Path
) -> None:
    hb = aiotp.Heartbeat(interval=1.0, timeout=2.0, max_missed=2)
    await rt.start_pool("p", LIFECYCLE, profile="process", size=1, heartbeat=hb)
    old_pid = rt.pool_stats("p").workers[0].pid
    call = asyncio.ensure_future(
        rt.execute("p", "block_until", {"path": str(tmp_path / "never")}, timeout=60)
    )
    await wait_until(lambda: rt.pool_stats("p").busy == 1)
    # The second miss (max_missed) comes at 2 + 2 s, once the ping had its real grace (2 s).
    await virtual_clock.advance(4.0)
    with pytest.raises(aiotp.WorkerCrashed):
        await call
    await wait_until(
        lambda: rt.pool_stats("p").live == 1 and rt.pool_stats("p").workers[0].pid != old_pid
    )
    assert not named(events, "heartbeat", "unhealthy")


# -- max_memory_mb --------------------------------------------------------------------------


def test_max_memory_mb_is_refused_for_thread_workers_and_validated() -> None:
    with pytest.raises(ValueError, match="shares the pool's process"):
        PoolConfig("p", LIFECYCLE, profile="thread", max_memory_mb=100)
    for bad in (0, -5, "100", True):
        with pytest.raises(ValueError, match="max_memory_mb"):
            PoolConfig("p", LIFECYCLE, profile="process", max_memory_mb=bad)
    assert PoolConfig("p", LIFECYCLE, profile="process", max_memory_mb=0.5).max_memory_mb == 0.5
    assert PoolConfig("p", LIFECYCLE).max_memory_mb is None


@pytest.mark.parametrize(
    "heartbeat",
    [aiotp.Heartbeat(interval=0.25, timeout=30.0), None],
    ids=["sampled-with-heartbeat", "own-timer-without-heartbeat"],
)
async def test_worker_past_max_memory_is_recycled_while_requests_keep_being_served(
    rt: aiotp.Runtime,
    virtual_clock: VirtualClock,
    events: list[Any],
    caplog: pytest.LogCaptureFixture,
    heartbeat: aiotp.Heartbeat | None,
) -> None:
    limit = 50
    await rt.start_pool(
        "p", LIFECYCLE, profile="process", size=1, max_memory_mb=limit, heartbeat=heartbeat
    )
    old = rt.pool_stats("p").workers[0]
    assert await rt.execute("p", "rss", {}) < limit  # it starts well under the limit
    traffic = Traffic(rt, "p")

    rss = await rt.execute("p", "hog", {"mb": 60}, timeout=30)
    assert rss > limit  # really past it, measured inside the worker itself
    # Memory is sampled on the runtime's clock, every heartbeat interval (or SAMPLE_EVERY):
    # nothing happens until the next sample is due.
    assert not named(events, "worker", "memory_exceeded")
    await virtual_clock.advance(heartbeat.interval if heartbeat is not None else SAMPLE_EVERY)

    await wait_until(lambda: old.pid not in {w.pid for w in rt.pool_stats("p").workers}, 30)
    served = await traffic.stop()
    assert served > 0

    exceeded = named(events, "worker", "memory_exceeded")
    assert len(exceeded) == 1
    measurements, metadata = exceeded[0][1], exceeded[0][2]
    assert metadata == {"pool": "p", "worker_id": old.worker_id, "pid": old.pid}
    assert measurements["rss_mb"] > limit and measurements["limit_mb"] == limit
    warning = [r for r in caplog.records if "max_memory_mb" in r.getMessage()]
    assert len(warning) == 1 and warning[0].levelno == logging.WARNING
    assert f"pid {old.pid}" in warning[0].getMessage()

    stats = rt.pool_stats("p")
    assert stats.recycled == 1 and stats.restarts == 0  # recycled gracefully, not crashed
    assert stats.live == 1 and stats.errors == 0
    assert await rt.execute("p", "rss", {}) < limit  # the replacement starts afresh

    def terminated() -> list[Any]:
        return [
            e for e in named(events, "worker", "terminated") if e[2]["worker_id"] == old.worker_id
        ]

    await wait_until(terminated, 30)
    assert terminated()[0][2]["planned"]  # retired, not killed


# -- recycling retries a replacement that fails to start ------------------------------------


@pytest.mark.expect_errors("failed to start")  # the crash report, once
@pytest.mark.parametrize("trigger", ["ttl", "max_requests"])
async def test_recycling_retries_a_replacement_that_fails_to_start(
    rt: aiotp.Runtime,
    virtual_clock: VirtualClock,
    profile: str,
    trigger: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = tmp_path / "starts"
    monkeypatch.setenv(COUNTER_ENV, str(counter))
    monkeypatch.setenv(FAIL_ENV, "2,3")  # the first two replacements fail in setup
    options: dict[str, Any] = {"ttl": 0.3} if trigger == "ttl" else {"max_requests": 3}
    # max_requests is an exact bound: the worn-out worker takes no more work while its
    # replacement is retried (1 s, then 2 s), so callers queue; they must wait, not fail.
    # No heartbeat: the back-off's retry is then the only timer, which the test checks.
    await rt.start_pool(
        "p", FLAKY, profile=profile, size=1, checkout_timeout=60, heartbeat=None, **options
    )
    first = rt.pool_stats("p").workers[0].worker_id
    starts = lambda: int(counter.read_text())  # noqa: E731
    assert starts() == 1

    def live() -> set[str]:
        return {w.worker_id for w in rt.pool_stats("p").workers}

    def retries() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "could not start a replacement" in r.getMessage()]

    traffic = Traffic(rt, "p")
    if trigger == "ttl":
        await virtual_clock.advance(0.3)  # the worker's age limit: a replacement starts
    # Both failures happen while the first worker keeps serving; the back-off (1 s, then 2 s,
    # at most the ttl) runs on the runtime's clock, crossed here by advancing it exactly; then
    # the 4th start replaces the first worker.
    for n, delay in enumerate((0.3, 0.3) if trigger == "ttl" else (1.0, 2.0), start=1):
        await wait_until(lambda: len(retries()) >= n, 60)  # noqa: B023  (awaited here)
        assert f"retrying in {delay:.1f} s" in retries()[-1].getMessage()
        assert virtual_clock.next_deadline() == pytest.approx(virtual_clock.now() + delay)
        assert first in live()
        await virtual_clock.advance(delay)
    await wait_until(lambda: first not in live(), 60)
    served = await traffic.stop()
    assert served > 0
    assert starts() >= 4
    assert len(retries()) == 2, [r.getMessage() for r in retries()]
    assert all(r.levelno == logging.WARNING for r in retries())
    stats = rt.pool_stats("p")
    assert stats.recycled >= 1 and stats.restarts == 0 and stats.live == 1
    assert await rt.execute("p", "echo", {"value": 7}) == 7


@pytest.mark.expect_errors("failed to start")  # the crash report, once
async def test_retrying_stops_when_the_worker_goes_away(
    rt: aiotp.Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiotp.pool")
    counter = tmp_path / "starts"
    monkeypatch.setenv(COUNTER_ENV, str(counter))
    monkeypatch.setenv(FAIL_ENV, "2")  # one failed replacement; its restart (start 3) works
    await rt.start_pool("p", FLAKY, profile="process", size=1, ttl=30.0, max_requests=1)
    old_pid = rt.pool_stats("p").workers[0].pid
    await rt.execute("p", "echo", {})  # max_requests: its replacement (start 2) fails
    await wait_until(lambda: counter.exists() and int(counter.read_text()) == 2)
    assert old_pid is not None
    os.kill(old_pid, 9)  # gone during the backoff: the supervisor restarts it (start 3)
    await wait_until(
        lambda: rt.pool_stats("p").live == 1 and rt.pool_stats("p").workers[0].pid != old_pid
    )
    # The retry after the first backoff finds the worker gone and gives up: no extra start.
    await wait_until(
        lambda: any("no more replacement attempts" in r.getMessage() for r in caplog.records), 30
    )
    assert int(counter.read_text()) == 3
    stats = rt.pool_stats("p")
    assert stats.live == 1 and len(stats.workers) == 1 and stats.restarts == 1
    assert stats.recycled == 0
