"""A pool whose runtime's store is a RedisSessionStore: session requests go to the worker pinned
in Redis, the pin is in Redis before a new session's first request runs (another runtime sharing
the store finds it), a pin another runtime recorded is honoured or reported as the in-memory
store's would be, and sessionless calls never touch the store."""

from __future__ import annotations

from typing import Any

import pytest
from session_adapters import Stateful

import aiotp
from aiotp.session_store.redis_store import RedisSessionStore
from aiotp.workers.api import registry
from aiotp.workers.errors import SessionWorkerLost


async def _start(rt: aiotp.Runtime, **options: Any) -> Any:
    options.setdefault("size", 3)
    await rt.start_pool("p", Stateful, profile="thread", heartbeat=None, **options)
    return registry(rt).get("p")


async def test_session_calls_stick_to_the_pin_recorded_in_redis(make_store: Any) -> None:
    store: RedisSessionStore = make_store()
    reader: RedisSessionStore = make_store()  # another client of the same store
    async with aiotp.Runtime(sessions=store) as rt:
        pool = await _start(rt)
        first = await rt.execute("p", "bump", {}, session="s1")
        pinned = pool.router.pins["s1"].worker_id
        # Recorded before the first request ran, not some time later.
        assert (await reader.peek("s1")).affinity == {"p": pinned}
        for n in range(2, 6):
            out = await rt.execute("p", "bump", {}, session="s1")
            assert out["worker"] == first["worker"] and out["count"] == n
        s = await reader.peek("s1")
        assert s.affinity == {"p": pinned} and s.last_worker_id == pinned
        assert (await rt.execute("p", "bump", {}))["count"] is None  # no session, no store


async def test_a_pin_written_to_redis_by_someone_else_routes_the_first_request(
    make_store: Any,
) -> None:
    store: RedisSessionStore = make_store()
    other: RedisSessionStore = make_store()
    async with aiotp.Runtime(sessions=store) as rt:
        pool = await _start(rt)
        target = pool.dispatcher.slots[2].worker_id
        await other.create("moved")
        await other.pin("moved", "p", target)  # e.g. an operator, or an imported session
        await rt.execute("p", "bump", {}, session="moved")
        assert pool.router.pins["moved"].worker_id == target
        assert (await other.peek("moved")).affinity == {"p": target}


@pytest.mark.parametrize("mode", ["hint", "strict_queue"])
async def test_two_runtimes_sharing_the_store_see_each_others_pins(
    make_store: Any, mode: str
) -> None:
    one: RedisSessionStore = make_store()
    two: RedisSessionStore = make_store()
    async with aiotp.Runtime(sessions=one) as rt1, aiotp.Runtime(sessions=two) as rt2:
        await _start(rt1, affinity=mode)
        pool2 = await _start(rt2, affinity=mode)
        await rt1.execute("p", "bump", {}, session="shared")
        if mode == "hint":
            # Its state is on the first runtime's worker: the second places it on one of its
            # own and records that, as it would for a session imported from elsewhere.
            out = await rt2.execute("p", "bump", {}, session="shared")
            assert out["count"] == 1
        else:
            with pytest.raises(SessionWorkerLost):
                await rt2.execute("p", "bump", {}, session="shared")
            out = await rt2.execute("p", "bump", {}, session="shared")  # placed anew
            assert out["count"] == 1
        mine = pool2.router.pins["shared"].worker_id
        assert (await one.peek("shared")).affinity == {"p": mine}
        # Back on the first runtime: the store says the session lives elsewhere now, so its own
        # old pin (and the state its worker kept) is gone, as the other runtime's was.
        pool1 = registry(rt1).get("p")
        if mode == "hint":
            assert (await rt1.execute("p", "bump", {}, session="shared"))["count"] == 1
        else:
            with pytest.raises(SessionWorkerLost):
                await rt1.execute("p", "bump", {}, session="shared")
            assert (await rt1.execute("p", "bump", {}, session="shared"))["count"] == 1
        theirs = pool1.router.pins["shared"].worker_id
        assert (await two.peek("shared")).affinity == {"p": theirs}
        assert (await rt1.execute("p", "bump", {}, session="shared"))["count"] == 2


async def test_a_session_deleted_in_redis_loses_its_pin_and_state(make_store: Any) -> None:
    store: RedisSessionStore = make_store()
    async with aiotp.Runtime(sessions=store) as rt:
        pool = await _start(rt)
        await rt.execute("p", "bump", {}, session="gone")
        assert (await rt.execute("p", "bump", {}, session="gone"))["count"] == 2
        await store.delete("gone")  # the removal hook runs here: the router forgets the pin
        assert "gone" not in pool.router.pins
        assert (await rt.execute("p", "bump", {}, session="gone"))["count"] == 1


async def test_a_full_store_runs_new_sessions_without_affinity(
    make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store: RedisSessionStore = make_store(max_sessions=1)
    async with aiotp.Runtime(sessions=store) as rt:
        await _start(rt)
        await rt.execute("p", "bump", {}, session="first")
        out = await rt.execute("p", "bump", {}, session="second")
        assert out["count"] == 1 and out["session"] == "second"
        assert not await store.exists("second")
    assert any("session store is full" in r.getMessage() for r in caplog.records)


async def test_sessions_ended_by_another_instance_leave_this_ones_pool(make_store: Any) -> None:
    """Removal hooks run on the removing instance only: the other instance's pool learns of
    the ends from the store-wide signal (on_ended) and drops its pins and worker state."""
    import asyncio
    import time

    serving: RedisSessionStore = make_store()
    other: RedisSessionStore = make_store(ttl=60)
    async with aiotp.Runtime(sessions=serving) as rt:
        pool = await _start(rt)
        for i in range(20):
            await rt.execute("p", "bump", {}, session=f"s{i}")
        assert len(pool.router.pins) == 20
        for i in range(20):
            assert await other.delete(f"s{i}")  # another instance removes them all
        deadline = time.monotonic() + 10
        while pool.router.pins and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert pool.router.pins == {}
        assert rt.pool_stats("p").pinned_sessions == 0
        # The worker state went too: a new session of one of those ids starts empty.
        assert (await rt.execute("p", "bump", {}, session="s3"))["count"] == 1
