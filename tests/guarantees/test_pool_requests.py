"""Points 2 and 3: a caller that leaves does not poison the pool, and a worker's death fails
only the requests that worker held."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import aiotp
from aiotp.workers.api import registry

TOOLS = "guarantee_adapters:Tools"


@pytest.fixture(params=["thread", "process"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _slots(rt: aiotp.Runtime, pool: str) -> list[Any]:
    return list(registry(rt).get(pool).dispatcher.slots)


async def test_timed_out_request_keeps_its_worker_busy_and_new_work_goes_elsewhere(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await rt.start_pool(
        "p", TOOLS, profile=profile, size=2, heartbeat=None, cancel_grace=30.0, overrun="wait"
    )
    marker = tmp_path / "ended"
    with pytest.raises(aiotp.CallTimeout):
        await rt.execute("p", "block", {"seconds": 2.0, "marker": str(marker)}, timeout=0.5)
    assert rt.pool_stats("p").busy == 1, "the slot was freed while its tool still runs"
    results = [await rt.execute("p", "quick", {"value": i}, timeout=1.0) for i in range(10)]
    assert results == list(range(10))  # none queued behind the abandoned tool
    assert rt.pool_stats("p").busy == 1
    await wait_until(marker.exists, 10.0)
    await wait_until(lambda: rt.pool_stats("p").busy == 0, 5.0)
    assert rt.pool_stats("p").restarts == 0 and rt.pool_stats("p").recycled == 0


async def test_an_abandoned_async_tool_is_cancelled_in_the_worker(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await rt.start_pool("p", TOOLS, profile=profile, size=1, heartbeat=None)
    marker = tmp_path / "async"
    with pytest.raises(aiotp.CallTimeout):
        await rt.execute("p", "wait", {"seconds": 30, "marker": str(marker)}, timeout=0.2)
    await wait_until(marker.exists, 5.0)
    assert marker.read_text() == "cancelled"
    await wait_until(lambda: rt.pool_stats("p").busy == 0, 5.0)
    assert await rt.execute("p", "quick", {"value": 1}) == 1
    assert rt.pool_stats("p").recycled == 0  # it gave up in time: no recycling needed


async def test_a_cancelled_caller_leaves_the_slot_busy_until_the_tool_ends(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await rt.start_pool(
        "p", TOOLS, profile=profile, size=1, heartbeat=None, cancel_grace=30.0, overrun="wait"
    )
    marker, started = tmp_path / "ended", tmp_path / "started"
    args = {"seconds": 0.8, "marker": str(marker), "started": str(started)}
    call = asyncio.ensure_future(rt.execute("p", "block", args, timeout=10))
    # Running, not merely sent: a request cancelled before it starts is skipped (and frees
    # the slot at once), which is not the state this test is about.
    await wait_until(started.exists, 5.0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert rt.pool_stats("p").busy == 1
    # The next request waits for the worker rather than being sent behind the running tool.
    assert await rt.execute("p", "quick", {"value": "after"}, timeout=10) == "after"
    assert marker.exists()


async def test_a_tool_overrunning_cancel_grace_gets_its_worker_recycled(
    rt: aiotp.Runtime, profile: str
) -> None:
    await rt.start_pool("p", TOOLS, profile=profile, size=1, heartbeat=None, cancel_grace=0.3)
    before = [s.worker_id for s in _slots(rt, "p")]
    with pytest.raises(aiotp.CallTimeout):
        await rt.execute("p", "block", {"seconds": 60}, timeout=0.1)
    await wait_until(lambda: rt.pool_stats("p").recycled == 1, 10.0)
    await wait_until(lambda: [s.worker_id for s in _slots(rt, "p")] != before, 10.0)
    assert await rt.execute("p", "quick", {"value": 2}, timeout=5) == 2
    stats = rt.pool_stats("p")
    assert (stats.live, stats.busy, stats.restarts) == (1, 0, 0)


@pytest.mark.parametrize("how", ["sigkill", "kill_actor"])
async def test_killing_a_busy_worker_never_fails_a_request_it_did_not_hold(
    rt: aiotp.Runtime, profile: str, how: str
) -> None:
    if how == "sigkill" and profile == "thread":
        pytest.skip("a thread worker has no process of its own to SIGKILL")
    await rt.start_pool("p", TOOLS, profile=profile, size=2, heartbeat=None, shutdown=0.5)
    held = [
        asyncio.ensure_future(rt.execute("p", "block", {"seconds": 30}, timeout=20))
        for _ in range(2)
    ]
    await wait_until(lambda: rt.pool_stats("p").busy == 2, 5.0)
    queued = [
        asyncio.ensure_future(rt.execute("p", "quick", {"value": i}, timeout=20))
        for i in range(3)
    ]
    await wait_until(lambda: rt.pool_stats("p").queued == 3, 5.0)
    victim = _slots(rt, "p")[0]
    if how == "sigkill":
        os.kill(victim.handle.pid, signal.SIGKILL)
    else:
        rt.exit(victim.ref, "kill")
    done, _ = await asyncio.wait(held, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and isinstance(done.pop().exception(), aiotp.WorkerCrashed)
    # Never sent to the dead worker: they are served by its replacement.
    assert [await asyncio.wait_for(q, 10) for q in queued] == [0, 1, 2]
    for call in held:
        call.cancel()
    await asyncio.gather(*held, return_exceptions=True)


@pytest.mark.parametrize(
    ("tool", "args", "error"),
    [
        ("nope", {}, aiotp.UnknownTool),
        ("quick", {"value": object()}, aiotp.SerializationError),
        ("stop_iteration", {}, aiotp.ToolError),
        ("quick", {"wrong": 1}, aiotp.ToolError),
    ],
)
async def test_a_request_refused_or_failed_frees_its_slot_at_once(
    rt: aiotp.Runtime, profile: str, tool: str, args: dict[str, Any], error: type[Exception]
) -> None:
    if error is aiotp.SerializationError and profile == "thread":
        pytest.skip("the thread profile passes Python objects as they are")
    await rt.start_pool("p", TOOLS, profile=profile, size=1, heartbeat=None, cancel_grace=0.2)
    with pytest.raises(error):
        await rt.execute("p", tool, args, timeout=5)
    assert rt.pool_stats("p").busy == 0
    await asyncio.sleep(0.4)  # past cancel_grace: a leaked ticket would recycle the worker
    assert rt.pool_stats("p").recycled == 0
    assert await rt.execute("p", "quick", {"value": 3}) == 3


async def test_execute_of_a_generator_tool_returns_all_its_items(
    rt: aiotp.Runtime, profile: str
) -> None:
    """More items than the stream window: execute must not stall on credit."""
    await rt.start_pool("g", "guarantee_adapters:Generators", profile=profile, size=1)
    assert await rt.execute("g", "count", {"n": 500}, timeout=10) == list(range(500))
    with pytest.raises(aiotp.ToolError) as info:
        await rt.execute("g", "fail_after", {"n": 100}, timeout=10)
    assert info.value.type_name == "KeyError"
    assert rt.pool_stats("g").busy == 0
    assert await rt.execute("g", "count", {"n": 3}) == [0, 1, 2]


@pytest.mark.parametrize(
    ("tool", "type_name"),
    [
        ("exits", "SystemExit"),
        ("interrupts", "KeyboardInterrupt"),
        ("async_exits", "SystemExit"),
        ("async_interrupts", "KeyboardInterrupt"),
        ("gen_exits", "SystemExit"),
    ],
)
async def test_a_tool_raising_a_base_exception_gives_tool_error_and_ends_nothing(
    rt: aiotp.Runtime, profile: str, tool: str, type_name: str
) -> None:
    await rt.start_pool("r", "guarantee_adapters:Rude", profile=profile, size=1, heartbeat=None)
    pid = rt.pool_stats("r").workers[0].pid
    with pytest.raises(aiotp.ToolError) as info:
        await rt.execute("r", tool, {}, timeout=5)
    assert info.value.type_name == type_name
    assert rt.running
    stats = rt.pool_stats("r")
    assert (stats.restarts, stats.workers[0].pid) == (0, pid)  # the worker lives on


async def test_an_abandoned_stream_holds_its_slot_until_the_worker_stopped_it(
    rt: aiotp.Runtime, profile: str
) -> None:
    await rt.start_pool("s", "guarantee_adapters:ModelTools", profile=profile, size=1)
    async for item in rt.stream("s", "count", {"n": 1000, "delay": 0.3}, timeout=5):
        assert item == 0
        break  # the worker is in its 0.3 s sleep before the next item
    assert rt.pool_stats("s").busy == 1, "the slot was freed while the generator still ran"
    await wait_until(lambda: rt.pool_stats("s").busy == 0, 5.0)
    assert rt.pool_stats("s").recycled == 0
    assert await rt.execute("s", "quick", {"value": 1}) == 1
    async for _ in rt.stream("s", "count", {"n": 3}, timeout=5):
        pass  # a stream read to its end frees the slot at once
    assert rt.pool_stats("s").busy == 0
