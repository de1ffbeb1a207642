"""Streams from generator tools, in every worker mode: errors, backpressure, early exit, liveness.

Modes: the thread profile, the process profile with its default inline host (one thread reads
the socket and runs the tool), and the process profile with ``threads_per_worker=2`` (a reading
thread routes CREDIT frames to the thread running the stream).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import aiotp
from aiotp.workers.credit import WINDOW

STREAMS = "stream_adapters:Streams"
MODES = {
    "thread": {"profile": "thread"},
    "process": {"profile": "process"},
    "process-threads": {"profile": "process", "threads_per_worker": 2},
}
SLACK = 1  # the item the consumer holds while it pauses


@pytest.fixture(params=sorted(MODES))
def mode(request: pytest.FixtureRequest) -> dict[str, Any]:
    return MODES[str(request.param)]


def _count(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except FileNotFoundError:
        return 0


async def _settled(path: Path, quiet: float = 0.3, timeout: float = 10.0) -> int:
    """The producer's count once it stopped moving for `quiet` s (a paused producer), failing
    after `timeout`. A stall on a loaded machine can only make it read low, never fail a test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = _count(path), loop.time()
    while loop.time() - since < quiet:
        if loop.time() > deadline:
            raise AssertionError(f"producer never paused; at {last} items after {timeout} s")
        await asyncio.sleep(0.02)
        now = _count(path)
        if now != last:
            last, since = now, loop.time()
    return last


async def test_sync_tool_raising_stop_iteration_fails_at_once_with_tool_error(
    rt: aiotp.Runtime, mode: dict[str, Any]
) -> None:
    await rt.start_pool("p", STREAMS, size=1, **mode)
    # The call timeout is long; failing to answer would trip the outer deadline first.
    async with asyncio.timeout(20):
        with pytest.raises(aiotp.ToolError) as info:
            await rt.execute("p", "stop_iteration", {}, timeout=120)
    assert info.value.type_name == "StopIteration"
    assert "leaked StopIteration" in info.value.message
    assert "stop_iteration" in info.value.traceback
    assert await rt.execute("p", "echo", {"value": "still serving"}) == "still serving"


async def _items_then_tool_error(
    rt: aiotp.Runtime, tool: str, after: int
) -> tuple[list[int], aiotp.ToolError]:
    """The items a failing generator tool streamed before its error, and that error."""
    got: list[int] = []
    async with asyncio.timeout(20):
        with pytest.raises(aiotp.ToolError) as info:
            async for item in rt.stream("p", tool, {"after": after}, timeout=120):
                got.append(item)
    return got, info.value


async def test_async_generator_failing_mid_stream_gives_tool_error(
    rt: aiotp.Runtime, mode: dict[str, Any]
) -> None:
    await rt.start_pool("p", STREAMS, size=1, **mode)
    got, error = await _items_then_tool_error(rt, "agen_fails", 2)
    assert got == [0, 1]
    assert error.type_name == "ValueError"
    assert "agen broke after 2 items" in error.message
    assert "agen_fails" in error.traceback
    await wait_until(lambda: rt.pool_stats("p").busy == 0)
    assert await rt.execute("p", "echo", {"value": 1}) == 1


async def test_generator_raising_a_base_exception_gives_tool_error(
    rt: aiotp.Runtime, mode: dict[str, Any]
) -> None:
    await rt.start_pool("p", STREAMS, size=1, **mode)
    got, error = await _items_then_tool_error(rt, "gen_aborts", 3)
    assert got == [0, 1, 2]
    assert error.type_name == "Abort"
    assert "gen_aborts" in error.traceback
    assert await rt.execute("p", "echo", {"value": 2}) == 2
    assert rt.pool_stats("p").restarts == 0


async def test_streaming_a_tool_that_is_not_a_generator_yields_its_result(
    rt: aiotp.Runtime, mode: dict[str, Any]
) -> None:
    await rt.start_pool("p", STREAMS, size=1, **mode)
    async with asyncio.timeout(20):
        got = [item async for item in rt.stream("p", "echo", {"value": "only"}, timeout=120)]
    assert got == ["only"]
    await wait_until(lambda: rt.pool_stats("p").busy == 0)


@pytest.mark.parametrize("tool", ["produce", "aproduce"])
async def test_slow_consumer_keeps_the_producer_at_most_a_window_ahead(
    rt: aiotp.Runtime, mode: dict[str, Any], tool: str, tmp_path: Path
) -> None:
    await rt.start_pool("p", STREAMS, size=1, **mode)
    produced, finished = tmp_path / "produced", tmp_path / "finished"
    args = {"n": 20 * WINDOW, "produced": str(produced), "finished": str(finished)}
    consumed = 0
    pauses = {5, 5 + 3 * WINDOW // 2}  # once early, once after credit came back a few times
    async for item in rt.stream("p", tool, args, timeout=30):
        assert item == consumed
        consumed += 1
        if consumed in pauses:
            ahead = await _settled(produced)
            assert consumed <= ahead <= consumed + WINDOW + SLACK
        if consumed == max(pauses) + 10:
            break
    await wait_until(finished.exists, timeout=10)
    assert _count(produced) <= consumed + WINDOW + SLACK
    await wait_until(lambda: rt.pool_stats("p").busy == 0)


@pytest.mark.parametrize("tool", ["produce", "aproduce"])
async def test_abandoned_stream_stops_the_generator_and_frees_the_worker(
    rt: aiotp.Runtime, mode: dict[str, Any], tool: str, tmp_path: Path
) -> None:
    await rt.start_pool("p", STREAMS, size=1, **mode)
    produced, finished = tmp_path / "produced", tmp_path / "finished"
    args = {"n": 10**9, "produced": str(produced), "finished": str(finished)}
    got: list[int] = []
    async for item in rt.stream("p", tool, args, timeout=30):
        got.append(item)
        if len(got) == 2:
            break
    assert got == [0, 1]
    await wait_until(finished.exists, timeout=10)  # its finally ran, in the worker
    await wait_until(lambda: rt.pool_stats("p").busy == 0)
    assert await rt.execute("p", "echo", {"value": "free"}, timeout=5) == "free"


async def test_stream_whose_item_wait_times_out_stops_the_generator(
    rt: aiotp.Runtime, mode: dict[str, Any], tmp_path: Path
) -> None:
    await rt.start_pool("p", STREAMS, size=1, **mode)
    finished = tmp_path / "finished"
    args = {"n": 3, "delay": 1.0, "finished": str(finished)}
    with pytest.raises(aiotp.CallTimeout):
        async for _ in rt.stream("p", "slow", args, timeout=0.2):
            pass
    # The item being made when the caller gave up is finished, then the generator is closed.
    await wait_until(finished.exists, timeout=10)
    await wait_until(lambda: rt.pool_stats("p").busy == 0, timeout=10)
    assert await rt.execute("p", "echo", {"value": "after"}, timeout=10) == "after"


async def test_paused_stream_still_answers_heartbeats(
    rt: aiotp.Runtime, mode: dict[str, Any], tmp_path: Path
) -> None:
    heartbeat = aiotp.Heartbeat(interval=0.2, timeout=1.0, max_missed=2)
    await rt.start_pool("p", STREAMS, size=1, heartbeat=heartbeat, **mode)
    produced = tmp_path / "produced"
    args = {"n": 10 * WINDOW, "produced": str(produced)}
    consumed = 0
    async for _ in rt.stream("p", "produce", args, timeout=30):
        consumed += 1
        if consumed == 1:
            await _settled(produced)  # the producer waits for credit now
            await asyncio.sleep(2.0)  # ten heartbeats: none may go unanswered
    assert consumed == 10 * WINDOW
    stats = rt.pool_stats("p")
    assert stats.restarts == 0, "the worker was killed while its stream was paused"


async def test_every_thread_paused_on_a_slow_consumer_still_answers_heartbeats(
    rt: aiotp.Runtime, tmp_path: Path
) -> None:
    """Two streams hold both threads of a worker process; pings must not queue behind them."""
    heartbeat = aiotp.Heartbeat(interval=0.2, timeout=1.0, max_missed=2)
    await rt.start_pool(
        "p", STREAMS, size=1, heartbeat=heartbeat, profile="process", threads_per_worker=2
    )
    files = [tmp_path / "a", tmp_path / "b"]
    streams = [
        rt.stream("p", "produce", {"n": 10 * WINDOW, "produced": str(f)}, timeout=30)
        for f in files
    ]
    firsts = [await s.__anext__() for s in streams]
    assert firsts == [0, 0]
    for f in files:
        await _settled(f)  # both producers wait for credit: no thread is free
    await asyncio.sleep(2.0)  # ten heartbeats
    for s in streams:
        assert len([item async for item in s]) == 10 * WINDOW - 1
    assert rt.pool_stats("p").restarts == 0, "the worker was killed while its streams paused"
