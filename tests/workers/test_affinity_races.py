"""Session routing against the races a hostile review found: sessions ending while their
requests run or wait, a store full for a while, another thread deleting a session, settings
that did not arrive, a pin from another runtime. Real thread and process workers."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import aiotp
from aiotp.workers.api import registry
from aiotp.workers.slot import SlotState

STATEFUL = "session_adapters:Stateful"


@pytest.fixture(params=["thread", "process"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _router(rt: aiotp.Runtime) -> Any:
    return registry(rt).get("p").router


async def _start(rt: aiotp.Runtime, profile: str, **options: Any) -> None:
    options.setdefault("size", 2)
    await rt.start_pool("p", STATEFUL, profile=profile, heartbeat=None, **options)


async def _held(rt: aiotp.Runtime, base: int = 0) -> int:
    """WorkerSession records the pool's workers hold (a thread pool shares our process)."""
    counts = [await rt.execute("p", "held", {}) for _ in range(4)]
    return max(counts) - base


async def test_a_session_deleted_while_its_hint_request_runs_is_not_pinned_again(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await _start(rt, profile)
    gate = tmp_path / "gate"
    call = asyncio.ensure_future(
        rt.execute("p", "wait_for", {"path": str(gate)}, session="s", timeout=20)
    )
    await wait_until(lambda: "s" in _router(rt).pins and _router(rt).pins["s"].in_flight == 1)
    assert rt.sessions.delete("s")
    gate.touch()
    await call
    await wait_until(lambda: rt.pool_stats("p").busy == 0)
    assert "s" not in _router(rt).pins and rt.pool_stats("p").pinned_sessions == 0


async def test_a_request_waiting_for_a_deleted_sessions_worker_is_told_and_leaves_no_state(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await _start(rt, profile, size=1, affinity="strict_queue", checkout_timeout=20.0)
    base = await rt.execute("p", "held", {})
    await rt.execute("p", "bump", {}, session="s")
    gate = tmp_path / "gate"
    running = asyncio.ensure_future(
        rt.execute("p", "wait_for", {"path": str(gate)}, session="s", timeout=20)
    )
    await wait_until(lambda: rt.pool_stats("p").busy == 1)
    queued = asyncio.ensure_future(rt.execute("p", "bump", {}, session="s", timeout=20))
    await wait_until(lambda: rt.pool_stats("p").queued == 1)
    assert rt.sessions.delete("s")
    gate.touch()
    await running
    with pytest.raises(aiotp.SessionWorkerLost):
        await queued
    assert await rt.execute("p", "held", {}) == base  # no record of the dead session
    assert (await rt.execute("p", "bump", {}, session="s"))["count"] == 1


async def test_requests_unrouted_by_a_full_store_leave_no_state(profile: str) -> None:
    store = aiotp.SessionStore(max_sessions=1)
    async with aiotp.Runtime(sessions=store, shutdown_timeout=2.0) as rt:
        await _start(rt, profile, size=1)
        base = await rt.execute("p", "held", {})
        store.create("first")
        for i in range(20):
            await rt.execute("p", "bump", {}, session=f"u{i}")  # no room: no affinity
        assert await rt.execute("p", "held", {}) == base
        assert rt.pool_stats("p").pinned_sessions == 0
        store.delete("first")
        assert (await rt.execute("p", "bump", {}, session="u0"))["count"] == 1  # fresh


async def test_a_new_session_waiting_for_a_worker_that_dies_is_simply_placed(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    """It had no state to lose: no SessionWorkerLost, now or on its next call."""
    await _start(rt, profile, size=1, affinity="strict_queue", checkout_timeout=20.0)
    blocker = asyncio.ensure_future(
        rt.execute("p", "wait_for", {"path": str(tmp_path / "never")}, timeout=20)
    )
    await wait_until(lambda: rt.pool_stats("p").busy == 1)
    new = asyncio.ensure_future(rt.execute("p", "bump", {}, session="n", timeout=20))
    await wait_until(lambda: rt.pool_stats("p").queued == 1)
    slot = registry(rt).get("p").dispatcher.slots[0]
    if slot.handle.pid is not None:
        os.kill(slot.handle.pid, signal.SIGKILL)
    else:
        slot.handle.kill()
    with pytest.raises(aiotp.WorkerCrashed):
        await blocker
    assert (await new)["count"] == 1
    assert (await rt.execute("p", "bump", {}, session="n"))["count"] == 2


async def test_a_session_deleted_by_another_thread_comes_back_empty(
    rt: aiotp.Runtime, profile: str
) -> None:
    await _start(rt, profile, affinity="strict_queue")
    for expected in (1, 2, 3):
        assert (await rt.execute("p", "bump", {}, session="s"))["count"] == expected
    deleter = threading.Thread(target=rt.sessions.delete, args=("s",))
    deleter.start()
    deleter.join()  # its removal report reaches the loop later than our next call
    assert (await rt.execute("p", "bump", {}, session="s"))["count"] == 1
    await asyncio.sleep(0.05)  # the late report about the old session arrives
    assert (await rt.execute("p", "bump", {}, session="s"))["count"] == 2


async def test_settings_that_did_not_arrive_are_sent_again(rt: aiotp.Runtime) -> None:
    await _start(rt, "process", size=1, affinity="strict_queue")
    rt.sessions.create("s", metadata={"v": 1})
    await rt.execute("p", "bump", {}, session="s")
    rt.sessions.update("s", lambda s: s.put_metadata("v", 2))
    with pytest.raises(aiotp.UnknownTool):  # looked up before the session is bound
        await rt.execute("p", "no_such_tool", {}, session="s")
    assert (await rt.execute("p", "bump", {}, session="s"))["settings"] == {"v": 2}


async def test_a_pin_from_another_runtime_is_never_taken_for_one_of_ours(profile: str) -> None:
    async with aiotp.Runtime(shutdown_timeout=2.0) as first:
        await _start(first, profile, affinity="strict_queue")
        for _ in range(3):
            await first.execute("p", "bump", {}, session="s")
        exported = first.sessions.export("s")
    async with aiotp.Runtime(shutdown_timeout=2.0) as second:
        await _start(second, profile, affinity="strict_queue")
        second.sessions.import_session(exported)
        with pytest.raises(aiotp.SessionWorkerLost):  # its worker is not one of ours: told
            await second.execute("p", "bump", {}, session="s")
        assert (await second.execute("p", "bump", {}, session="s"))["count"] == 1
        slots = registry(second).get("p").dispatcher.slots
        assert all(s.state is SlotState.SERVING for s in slots)


async def test_settings_msgpack_cannot_carry_are_named(rt: aiotp.Runtime) -> None:
    await _start(rt, "process", size=1)
    rt.sessions.create("s", metadata={"when": object()})
    with pytest.raises(aiotp.SerializationError, match="session 's': its settings"):
        await rt.execute("p", "bump", {}, session="s")
    assert (await rt.execute("p", "bump", {}))["count"] is None  # the pool is fine
