"""Pools end to end: real threads and real child processes, no mocks."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from helpers import wait_until

import aiotp
from aiotp import telemetry
from aiotp.runtime.clock import VirtualClock

ECHO = "pool_adapters:Echo"


@pytest.fixture(params=["thread", "process"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_execute_round_trip_and_stats(rt: aiotp.Runtime, profile: str) -> None:
    await rt.start_pool("p", ECHO, profile=profile, size=2)
    assert await rt.execute("p", "echo", {"value": [1, "two", {"3": 4.0}]}) == [
        1,
        "two",
        {"3": 4.0},
    ]
    assert await rt.execute("p", "async_echo", {"value": "a"}) == "a"
    stats = rt.pool_stats("p")
    assert (stats.size, stats.live, stats.busy, stats.queued) == (2, 2, 0, 0)
    assert stats.requests == 2 and stats.errors == 0


async def test_tool_errors_are_typed_and_the_pool_survives(rt: aiotp.Runtime, profile: str) -> None:
    await rt.start_pool("p", ECHO, profile=profile, size=1)
    with pytest.raises(aiotp.ToolError) as info:
        await rt.execute("p", "crash", {"message": "bad input 42"})
    assert info.value.type_name == "RuntimeError"
    assert "bad input 42" in str(info.value)
    assert "crash" in info.value.traceback
    with pytest.raises(aiotp.UnknownTool) as unknown:
        await rt.execute("p", "nope", {})
    assert "echo" in str(unknown.value) and "count" in str(unknown.value)
    with pytest.raises(aiotp.ToolError):
        await rt.execute("p", "echo", {"wrong_argument": 1})
    assert await rt.execute("p", "echo", {"value": "still here"}) == "still here"
    assert rt.pool_stats("p").restarts == 0


async def test_bad_input_gets_typed_errors(rt: aiotp.Runtime) -> None:
    await rt.start_pool("p", ECHO, profile="process", size=1)
    with pytest.raises(aiotp.UnknownPool):
        await rt.execute("missing", "echo", {})
    with pytest.raises(TypeError):
        await rt.execute("p", "echo", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await rt.execute("p", "echo", {}, session=123)  # type: ignore[arg-type]
    for bad in (0, -1):
        with pytest.raises(ValueError):
            await rt.execute("p", "echo", {}, timeout=bad)
    with pytest.raises(aiotp.SerializationError):
        await rt.execute("p", "echo", {"value": object()})
    with pytest.raises(ValueError):
        await rt.start_pool("q", ECHO, profile="process", size=0)
    with pytest.raises(ValueError):
        await rt.start_pool("q", ECHO, profile="fork-bomb", size=1)
    assert await rt.execute("p", "echo", {"value": 1}) == 1


@pytest.mark.expect_errors("failed to start")  # the crash report, once
async def test_setup_failure_makes_start_pool_raise_with_its_message(
    rt: aiotp.Runtime, profile: str
) -> None:
    with pytest.raises(aiotp.WorkerStartError) as info:
        await rt.start_pool("bad", "pool_adapters:BadSetup", profile=profile, size=2)
    assert "model file missing" in str(info.value)
    with pytest.raises(aiotp.UnknownPool):
        await rt.execute("bad", "noop", {})


@pytest.mark.expect_errors("failed to start")  # the crash report, once
async def test_adapter_path_that_does_not_import(rt: aiotp.Runtime) -> None:
    with pytest.raises(aiotp.WorkerStartError) as info:
        await rt.start_pool("bad", "no_such_module_xyz:Nope", profile="process", size=1)
    assert "no_such_module_xyz" in str(info.value)


async def test_session_affinity_prefers_the_last_worker(rt: aiotp.Runtime, profile: str) -> None:
    await rt.start_pool("p", ECHO, profile=profile, size=3)
    first = await rt.execute("p", "whoami", {}, session="user-1")
    for _ in range(10):
        assert await rt.execute("p", "whoami", {}, session="user-1") == first
    worker_id = rt.sessions.get("user-1").last_worker_id
    assert worker_id in {w.worker_id for w in rt.pool_stats("p").workers}


async def test_queueing_pool_busy_and_checkout_timeout(rt: aiotp.Runtime) -> None:
    await rt.start_pool("p", ECHO, profile="thread", size=1, max_queue=1, checkout_timeout=0.2)
    running = asyncio.ensure_future(rt.execute("p", "sleep", {"seconds": 0.5}))
    await wait_until(lambda: rt.pool_stats("p").busy == 1)
    queued = asyncio.ensure_future(rt.execute("p", "echo", {"value": "q"}))
    await wait_until(lambda: rt.pool_stats("p").queued == 1)
    with pytest.raises(aiotp.PoolBusy):
        await rt.execute("p", "echo", {"value": "overflow"})
    with pytest.raises(aiotp.CheckoutTimeout):
        await queued
    assert await running == 0.5
    assert await rt.execute("p", "echo", {"value": "after"}) == "after"


async def test_queued_callers_are_served_in_order(rt: aiotp.Runtime) -> None:
    await rt.start_pool("p", ECHO, profile="thread", size=1, checkout_timeout=5.0)
    order: list[int] = []

    async def call(i: int) -> None:
        await rt.execute("p", "sleep", {"seconds": 0.01})
        order.append(i)

    await asyncio.gather(*(call(i) for i in range(8)))
    assert order == list(range(8))


async def test_recycling_keeps_capacity(rt: aiotp.Runtime, profile: str) -> None:
    await rt.start_pool("p", ECHO, profile=profile, size=2, max_requests=3)
    seen_workers: set[str] = set()
    for _ in range(400):
        await rt.execute("p", "echo", {"value": 1})
        stats = rt.pool_stats("p")
        assert stats.live >= 2, stats  # capacity never drops during recycling
        seen_workers.update(w.worker_id for w in stats.workers)
        if stats.recycled >= 3:
            break
        await asyncio.sleep(0.001)  # let replacements start between requests
    assert rt.pool_stats("p").recycled >= 3
    assert len(seen_workers) >= 4
    await wait_until(lambda: len(rt.pool_stats("p").workers) == 2)
    # Retired workers take their heartbeat monitors with them: nothing accumulates.
    monitors = lambda: [a for a in rt.actors() if type(a._actor).__name__ == "HeartbeatMonitor"]  # noqa: E731
    await wait_until(lambda: len(monitors()) == 2)


async def test_ttl_recycles_workers(rt: aiotp.Runtime) -> None:
    await rt.start_pool("p", ECHO, profile="thread", size=1, ttl=0.1)
    first = rt.pool_stats("p").workers[0].worker_id
    await wait_until(lambda: rt.pool_stats("p").recycled >= 1)
    await wait_until(lambda: first not in {w.worker_id for w in rt.pool_stats("p").workers})
    assert await rt.execute("p", "echo", {"value": 2}) == 2


async def test_sigkilled_worker_fails_its_request_and_the_pool_heals(rt: aiotp.Runtime) -> None:
    await rt.start_pool("p", ECHO, profile="process", size=2)
    pids = {w.pid for w in rt.pool_stats("p").workers}
    victim = await rt.execute("p", "whoami", {}, session="s")
    victim_pid = int(victim.split(":")[0])
    call = asyncio.ensure_future(rt.execute("p", "sleep", {"seconds": 30}, timeout=30, session="s"))
    await wait_until(lambda: rt.pool_stats("p").busy == 1)
    started = time.monotonic()
    os.kill(victim_pid, signal.SIGKILL)
    with pytest.raises(aiotp.WorkerCrashed):
        await call
    assert time.monotonic() - started < 2.0  # at once, not after the request's timeout
    await wait_until(lambda: len(rt.pool_stats("p").workers) == 2)
    new_pids = {w.pid for w in rt.pool_stats("p").workers}
    assert victim_pid not in new_pids and len(new_pids & pids) == 1
    assert rt.pool_stats("p").restarts == 1
    assert await rt.execute("p", "echo", {"value": "healed"}) == "healed"


async def test_worker_that_exits_by_itself_is_replaced(rt: aiotp.Runtime) -> None:
    await rt.start_pool("p", ECHO, profile="process", size=1)
    with pytest.raises(aiotp.WorkerCrashed):
        await rt.execute("p", "die", {})
    await wait_until(lambda: rt.pool_stats("p").live == 1)
    assert await rt.execute("p", "echo", {"value": 3}) == 3


# Heartbeats run on the runtime's clock: these tests cross their deadlines on a virtual one.
# Binary-exact seconds, so that the deadline's instant is exact too.
VIRTUAL_HB = aiotp.Heartbeat(interval=1.0, timeout=1.0, max_missed=2)
# The max_missed-th ping, sent at max_missed * interval, misses at + timeout: that kills.
CAUGHT_AT = VIRTUAL_HB.interval * VIRTUAL_HB.max_missed + VIRTUAL_HB.timeout


async def _hang_until_caught(rt: aiotp.Runtime, clock: VirtualClock) -> None:
    """Hang the pool's only worker; it must survive until CAUGHT_AT, and be killed then.

    A deadline crossed while the ping is in flight is a miss once the ping had its real grace
    (min(timeout, cap) s, heartbeat.py), so the first miss is waited for, not assumed."""
    missed: list[Any] = []
    handler = f"hang-{id(missed)}"
    telemetry.attach(handler, ("aiotp", "pool", "heartbeat", "missed"), lambda *e: missed.append(e))
    try:
        call = asyncio.ensure_future(rt.execute("p", "hang", {}, timeout=30))
        await wait_until(lambda: rt.pool_stats("p").busy == 1)  # pings queue behind the hang
        await clock.advance(CAUGHT_AT - 0.5)
        await wait_until(lambda: len(missed) == VIRTUAL_HB.max_missed - 1)
        assert not call.done(), "killed before its last heartbeat deadline"
        await clock.advance(0.5)
        with pytest.raises(aiotp.WorkerCrashed):
            await call
    finally:
        telemetry.detach(handler)


async def test_hung_process_worker_is_replaced_by_the_heartbeat(
    rt: aiotp.Runtime, virtual_clock: VirtualClock
) -> None:
    await rt.start_pool("p", ECHO, profile="process", size=1, heartbeat=VIRTUAL_HB)
    old_pid = rt.pool_stats("p").workers[0].pid
    await _hang_until_caught(rt, virtual_clock)
    await wait_until(lambda: rt.pool_stats("p").live == 1)
    assert rt.pool_stats("p").workers[0].pid != old_pid
    assert await rt.execute("p", "echo", {"value": "alive"}) == "alive"


async def test_hung_thread_worker_is_retired_and_its_thread_counted(
    rt: aiotp.Runtime, virtual_clock: VirtualClock
) -> None:
    await rt.start_pool("p", ECHO, profile="thread", size=1, heartbeat=VIRTUAL_HB)
    await _hang_until_caught(rt, virtual_clock)
    await wait_until(lambda: rt.pool_stats("p").live == 1)
    assert rt.pool_stats("p").abandoned_threads >= 1
    assert await rt.execute("p", "echo", {"value": "alive"}) == "alive"


async def test_streaming_and_early_cancellation_free_the_worker(
    rt: aiotp.Runtime, profile: str
) -> None:
    await rt.start_pool("p", ECHO, profile=profile, size=1)
    assert [i async for i in rt.stream("p", "count", {"n": 5})] == [0, 1, 2, 3, 4]
    got: list[int] = []
    async for item in rt.stream("p", "count", {"n": 1000, "delay": 0.01}):
        got.append(item)
        if item == 2:
            break
    assert got == [0, 1, 2]
    await wait_until(lambda: rt.pool_stats("p").busy == 0)
    assert await rt.execute("p", "echo", {"value": "free"}, timeout=2.0) == "free"


async def test_stop_pool_stops_workers_and_unregisters(rt: aiotp.Runtime) -> None:
    await rt.start_pool("p", ECHO, profile="process", size=2)
    pids = [w.pid for w in rt.pool_stats("p").workers]
    await rt.stop_pool("p")
    with pytest.raises(aiotp.UnknownPool):
        await rt.execute("p", "echo", {})
    for pid in pids:
        assert pid is not None
        await wait_until(lambda pid=pid: not _alive(pid))


async def test_pool_in_a_supervision_tree(rt: aiotp.Runtime) -> None:
    sup = await rt.spawn(
        aiotp.Supervisor,
        [aiotp.pool_spec("tree-pool", ECHO, profile="thread", size=2)],
        strategy="one_for_one",
    )
    assert await rt.execute("tree-pool", "echo", {"value": "in a tree"}) == "in a tree"
    children = await sup.which_children()
    assert children[0][0] == "tree-pool"
    await rt.stop_pool("tree-pool")  # through the tree: not restarted as a crashed child
    assert [c.ref for c in await sup.which_children()] == [None]
    with pytest.raises(aiotp.UnknownPool):
        await rt.execute("tree-pool", "echo", {})
    await sup.restart_child("tree-pool")
    assert await rt.execute("tree-pool", "echo", {"value": "back"}) == "back"
    await rt.stop(sup)
    with pytest.raises(aiotp.UnknownPool):
        await rt.execute("tree-pool", "echo", {})


async def test_execute_after_runtime_closed_raises() -> None:
    rt = aiotp.Runtime()
    async with rt:
        await rt.start_pool("p", ECHO, profile="thread", size=1)
    with pytest.raises(aiotp.RuntimeClosed):
        await rt.execute("p", "echo", {})


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _unused(*_: Any) -> None:
    return None


async def test_safety_checks_warn_once_about_unsafe_modules(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3  # noqa: F401  (documented as unsafe to share between threads)

    class Checked(aiotp.Adapter):
        thread_safe = True
        safety_checks = True

        @aiotp.tool
        def noop(self) -> None:
            return None

    seen: list[Any] = []
    aiotp.telemetry.attach("safety", ("aiotp", "pool", "safety"), lambda e, m, md: seen.append(md))
    try:
        await rt.start_pool("checked", Checked, profile="thread", size=2, threads_per_worker=4)
    finally:
        aiotp.telemetry.detach("safety")
    assert [md["kind"] for md in seen] == ["unsafe_module"]  # once, not once per worker
    assert "sqlite3" in caplog.text


async def test_a_full_session_store_costs_affinity_not_the_request() -> None:
    store = aiotp.SessionStore(max_sessions=1)
    async with aiotp.Runtime(sessions=store) as rt:
        await rt.start_pool("p", ECHO, profile="thread", size=1)
        assert await rt.execute("p", "echo", {"value": 1}, session="a") == 1
        assert await rt.execute("p", "echo", {"value": 2}, session="b") == 2  # store is full
        assert rt.sessions is store and store.ids() == ["a"]


async def test_a_tool_errors_message_leaks_no_remote_traceback(
    rt: aiotp.Runtime, profile: str
) -> None:
    """str(ToolError) may end up in an HTTP response: it names the error, not the worker's
    files and code; the traceback stays an attribute, and shows in a logged traceback."""
    import traceback

    await rt.start_pool("p", ECHO, profile=profile, size=1)
    with pytest.raises(aiotp.ToolError) as info:
        await rt.execute("p", "crash", {"message": "bad input 42"})
    error = info.value
    assert str(error) == "RuntimeError: bad input 42"
    assert "pool_adapters.py" in error.traceback and "pool_adapters.py" not in str(error)
    printed = "".join(traceback.format_exception(error))
    assert "remote traceback" in printed and "pool_adapters.py" in printed
