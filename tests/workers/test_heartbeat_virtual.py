"""Heartbeats on a virtual clock: the deadlines are virtual, the pings real I/O that `advance`
does not wait for. A healthy worker must never be declared missed because one ``advance``
fired its ticks and deadlines within microseconds of real time, and a hung one must hold one
ping, not one per tick. Real threads and processes, no mocks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import aiotp
from aiotp import telemetry
from aiotp.runtime.clock import VirtualClock

ECHO = "pool_adapters:Echo"
LIFECYCLE = "lifecycle_adapters:Lifecycle"
_ids = itertools.count()


@pytest.fixture
def events() -> Iterator[list[tuple[str, ...]]]:
    """The names of every heartbeat telemetry event while the test runs."""
    seen: list[tuple[str, ...]] = []
    handler = f"hb-virtual-{next(_ids)}"
    telemetry.attach(
        handler, ("aiotp", "pool", "heartbeat"), lambda e, m, md: seen.append(tuple(e)[3:])
    )
    yield seen
    telemetry.detach(handler)


def monitors(rt: aiotp.Runtime) -> list[Any]:
    return [a._actor for a in rt.actors() if type(a._actor).__name__ == "HeartbeatMonitor"]


@pytest.mark.parametrize("profile", ["thread", "process"])
@pytest.mark.parametrize("seconds", [20.0, 3600.0])
async def test_one_big_advance_never_misses_a_healthy_worker_and_gives_the_same_result(
    rt: aiotp.Runtime, virtual_clock: VirtualClock, events: list[Any], profile: str, seconds: float
) -> None:
    # Production's heartbeat: a tick every 2 s, 10 s to answer, 3 misses kill.
    await rt.start_pool("p", ECHO, profile=profile, size=1, heartbeat=aiotp.Heartbeat())
    pid = rt.pool_stats("p").workers[0].worker_id
    outcomes = []
    for _ in range(5):
        await virtual_clock.advance(seconds)
        stats = rt.pool_stats("p")
        outcomes.append(
            (events.count(("missed",)), stats.restarts, [w.worker_id for w in stats.workers])
        )
    assert outcomes == [(0, 0, [pid])] * 5
    # The pong of the ping still in flight settles every tick it covers: nothing is left to
    # become a miss once the real grace runs out.
    await wait_until(lambda: all(m.in_flight == 0 for m in monitors(rt)), timeout=30)
    await virtual_clock.advance(0)
    assert events.count(("missed",)) == 0
    assert await rt.execute("p", "echo", {"value": 1}) == 1
    assert [w.worker_id for w in rt.pool_stats("p").workers] == [pid]


async def test_a_hung_worker_holds_one_ping_not_one_per_tick(
    rt: aiotp.Runtime, virtual_clock: VirtualClock, events: list[Any], tmp_path: Path
) -> None:
    hb = aiotp.Heartbeat(interval=1.0, timeout=1.0, max_missed=2, dependent=False)
    await rt.start_pool("p", LIFECYCLE, profile="thread", size=1, heartbeat=hb)
    release = tmp_path / "release"
    blocked = asyncio.ensure_future(
        rt.execute("p", "block_until", {"path": str(release)}, timeout=60)
    )
    await wait_until(lambda: rt.pool_stats("p").busy == 1)
    before = len(asyncio.all_tasks())
    await virtual_clock.advance(500.0)  # 500 ticks while it hangs
    assert len(asyncio.all_tasks()) - before <= 3  # the one ping (before: 500 of them)
    [monitor] = monitors(rt)
    assert monitor.in_flight == 1
    # Every deadline crossed is still a miss (after the ping's real grace of 1 s).
    await wait_until(lambda: events.count(("missed",)) == 499, timeout=30)
    assert events.count(("unhealthy",)) == 1

    release.touch()
    assert await blocked is True
    await wait_until(lambda: ("recovered",) in events, timeout=30)
    assert monitor.in_flight == 0
