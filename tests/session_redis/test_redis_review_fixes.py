"""Regressions of a hostile review of the Redis store and its pool integration: each test
failed before its fix. A real redis-server throughout; faults are real ones (writes paused on
the server with CLIENT PAUSE), not stand-ins."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from session_adapters import Stateful

import aiotp
from aiotp.runtime.errors import CallTimeout
from aiotp.session_store.errors import SessionStoreError, SessionStoreUnavailable
from aiotp.session_store.redis_store import RedisSessionStore
from aiotp.workers.api import registry


class OnePinLost(RedisSessionStore):
    """Its first pin write meets a server that does not accept writes (paused past the store's
    timeout), then the server is let go: the write really times out, nothing simulated."""

    lost = 0

    async def pin(self, session_id: str, pool: str, worker_id: str | None) -> None:
        if self.lost:
            await super().pin(session_id, pool, worker_id)
            return
        self.lost += 1
        admin = self._redis()
        await admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        try:
            await super().pin(session_id, pool, worker_id)
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")


async def test_a_failed_pin_write_keeps_the_pin_and_the_state(redis_url: str, prefix: str) -> None:
    store = OnePinLost(redis_url, prefix=prefix, timeout=0.3)
    try:
        async with aiotp.Runtime(sessions=store) as rt:
            await rt.start_pool(
                "p", Stateful, profile="thread", size=2, heartbeat=None, affinity="strict_queue"
            )
            counts = [(await rt.execute("p", "bump", {}, session="s"))["count"] for _ in range(4)]
            assert store.lost == 1
            assert counts == [1, 2, 3, 4]  # was [1, 1, 2, 3]: the store's None read as a move
            pinned = registry(rt).get("p").router.pins["s"].worker_id
            assert (await store.peek("s")).affinity == {"p": pinned}  # written again
    finally:
        await store.stop()


@pytest.mark.parametrize("ttl", [1e9 + 1, 1e13, 1e16, 1e300, float("inf"), float("nan"), 0, -1])
async def test_update_refuses_a_ttl_out_of_range_and_changes_nothing(
    make_store: Any, ttl: float
) -> None:
    store: RedisSessionStore = make_store()
    await store.create("u", ttl=60)
    with pytest.raises(ValueError, match="ttl"):
        await store.update("u", lambda s: setattr(s, "ttl", ttl))
    assert (await store.get("u")).ttl == 60  # was: half applied, then every read failed
    assert (await store.update("u", lambda s: setattr(s, "ttl", 1e9))).ttl == 1e9  # the cap


async def test_the_scripts_check_the_ttl_before_writing_anything(make_store: Any) -> None:
    store: RedisSessionStore = make_store()
    await store.create("u", ttl=60)
    version = (await store._read("u", b"p", "peek"))[1][8]
    with pytest.raises(SessionStoreError, match="ttl out of range"):
        await store._eval("CHANGE", "update", store._key + "u", "cas", version, 0,
                          "m", b"\x81\xa1k\x01", "ttl", "1e16")  # fmt: skip
    s = await store.peek("u")
    assert s.ttl == 60 and s.metadata == {}


async def test_importing_a_ttl_out_of_range_leaves_nothing_behind(make_store: Any) -> None:
    store: RedisSessionStore = make_store()
    memory = aiotp.SessionStore()
    memory.create("big", ttl=1e16)
    with pytest.raises(ValueError, match="ttl"):
        await store.import_session(memory.export("big"))
    assert not await store.exists("big")
    assert await store.count() == 0  # was: a live key without expiry holding a quota place
    await store.create("big")


@pytest.mark.parametrize(
    "metadata", [{(1, 2): "x"}, {"deep": {(1,): 2}}, {"l": [{frozenset(): 1}]}]
)
async def test_map_keys_that_would_not_come_back_are_refused_before_writing(
    make_store: Any, metadata: dict[Any, Any]
) -> None:
    store: RedisSessionStore = make_store()
    with pytest.raises(TypeError, match="key"):
        await store.create("c", metadata=metadata)
    assert not await store.exists("c")
    await store.create("u", metadata={"a": 1, 2: "b", None: b"x"})
    with pytest.raises(TypeError, match="key"):
        await store.update("u", lambda s: s.metadata.update(metadata))
    assert (await store.get("u")).metadata == {"a": 1, 2: "b", None: b"x"}  # was: "corrupt"


async def _clients(admin: RedisSessionStore) -> int:
    """Connections the server has open, the admin's own included."""
    listed: list[Any] = await admin._redis().client_list()
    return len(listed)


async def _settles(admin: RedisSessionStore, want: int) -> int:
    """The server's connection count once it is `want` (a closed socket takes a moment to
    be seen), or what it still is after a generous deadline."""
    deadline = asyncio.get_running_loop().time() + 10
    n = await _clients(admin)
    while n != want and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
        n = await _clients(admin)
    return n


async def test_stop_closes_every_connection_of_the_pool(make_store: Any) -> None:
    admin: RedisSessionStore = make_store(prefix="admin")
    base = await _clients(admin)
    store: RedisSessionStore = make_store()
    await store.create("a")
    await asyncio.gather(*(store.get("a") for _ in range(50)))
    async with store.subscribe("a"):
        pass
    assert await _clients(admin) > base
    await store.stop()
    assert await _settles(admin, base) == base  # was: 32 left open until a gc
    assert (await store.get("a")).id == "a"  # and the next call opens them again


async def test_max_connections_bounds_every_command_and_bursts_wait(make_store: Any) -> None:
    admin: RedisSessionStore = make_store(prefix="admin")
    base = await _clients(admin)
    store: RedisSessionStore = make_store(max_connections=3)
    await store.create("a")
    async with store.subscribe("a"):
        for op in (store.count, store.stats, store.ping, store.sweep, store.count_by_state):
            # was: "Too many connections" (count) or more connections than allowed
            results = await asyncio.gather(*(op() for _ in range(60)), return_exceptions=True)
            assert not [r for r in results if isinstance(r, BaseException)], op
        await asyncio.gather(*(store.get("a") for _ in range(60)))
        assert await _clients(admin) - base <= 3 + 1  # one more: the pub/sub listener


async def test_count_by_state(make_store: Any) -> None:
    store: RedisSessionStore = make_store()
    assert await store.count_by_state() == {}
    for sid in ("a", "b", "c"):
        await store.create(sid)
    await store.transition("c", "running")
    assert await store.count_by_state() == {"pending": 2, "running": 1}


async def _channels(admin: RedisSessionStore, store: RedisSessionStore) -> int:
    listed: list[Any] = await admin._redis().pubsub_channels(store._p + "ev:*")
    return len(listed)


async def test_the_channels_of_ended_sessions_are_left(make_store: Any) -> None:
    admin: RedisSessionStore = make_store(prefix="admin")
    store: RedisSessionStore = make_store()
    subs = []
    for i in range(20):
        await store.create(f"e{i}")
        subs.append(await store.subscribe(f"e{i}"))
    assert await _channels(admin, store) == 20
    for i in range(20):
        await store.delete(f"e{i}")
    for sub in subs:
        assert [event.kind async for event in sub] == ["end"]  # the subscribers still hold them
    deadline = asyncio.get_running_loop().time() + 10
    while await _channels(admin, store) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert await _channels(admin, store) == 0  # was: 20, for as long as the store lived
    await store.create("e0")  # the same id again: its channel is followed anew
    async with store.subscribe("e0") as again:
        await asyncio.sleep(0.6)  # past one tidy (IDLE = 0.5 s): it must not leave e0's channel
        await store.transition("e0", "running")
        assert (await anext(again)).kind == "state"


@pytest.mark.parametrize("via_runtime", [False, True])
async def test_stop_ends_every_open_subscription(make_store: Any, via_runtime: bool) -> None:
    store: RedisSessionStore = make_store()
    await store.create("x")
    sub = await store.subscribe("x")
    reader = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    if via_runtime:
        async with aiotp.Runtime(sessions=store):
            pass  # its shutdown stops the store
    else:
        await store.stop()
    event = await asyncio.wait_for(reader, 10)  # was: waited forever
    assert (event.kind, event.data) == ("end", {"reason": "shutdown"})
    assert [e async for e in sub] == []


async def test_update_keeps_one_deadline_for_the_whole_call(make_store: Any) -> None:
    store: RedisSessionStore = make_store(timeout=0.3)
    await store.create("u")

    def slow(s: Any) -> None:  # spends the call's whole deadline before the write
        time.sleep(0.4)
        s.metadata["k"] = 1

    with pytest.raises(SessionStoreUnavailable, match="no reply in time"):
        await store.update("u", slow)  # was: the write got a fresh 0.3 s of its own
    assert (await store.peek("u")).metadata == {}


async def test_a_session_request_keeps_its_own_timeout_while_the_store_is_slow(
    make_store: Any,
) -> None:
    admin: RedisSessionStore = make_store(prefix="admin")
    store: RedisSessionStore = make_store(timeout=20)  # far longer than the request's
    async with aiotp.Runtime(sessions=store) as rt:
        await rt.start_pool("p", Stateful, profile="thread", size=1, heartbeat=None)
        await rt.execute("p", "bump", {}, session="s")
        await admin._redis().execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        try:
            call = rt.execute("p", "bump", {}, session="s", timeout=0.3)
            with pytest.raises(CallTimeout, match="session store"):
                await asyncio.wait_for(call, 10)  # was: the store's 20 s (a bare TimeoutError)
        finally:
            await admin._redis().execute_command("CLIENT", "UNPAUSE")
        assert (await rt.execute("p", "bump", {}, session="s"))["count"] == 2  # nothing lost
