"""One behaviour, two stores: every test here runs against the in-memory `SessionStore` (through
a thin async facade) and against `RedisSessionStore` on a real server, with the same injected
clock, and asserts the same outcome. Cases are taken from tests/session_store (store, lifecycle,
pins, events, portable, quota reclaim)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from aiotp.session_store.errors import (
    IllegalTransition,
    SessionExists,
    SessionNotFound,
    SessionQuotaExceeded,
    SnapshotError,
)
from aiotp.session_store.store import SessionStore

DEADLINE = 5.0
_ASYNC = {
    "create", "get", "get_or_create", "peek", "touch", "update", "set_affinity", "heartbeat",
    "set_awaiting_input", "transition", "pin", "delete", "publish", "export", "import_session",
    "sweep", "stats", "ids",
}  # fmt: skip


class Facade:
    """The in-memory store with the Redis store's coroutine API."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if name not in _ASYNC:
            return attr

        async def call(*args: Any, **kw: Any) -> Any:
            return attr(*args, **kw)

        return call

    async def exists(self, session_id: str) -> bool:
        return session_id in self.store

    async def count(self) -> int:
        return len(self.store)


@pytest.fixture(params=["memory", "redis"])
def mk(request: pytest.FixtureRequest, clock: Any) -> Callable[..., Any]:
    """``mk(**options)``: a store of this run's kind on the test's clock."""
    if request.param == "memory":
        return lambda **kw: Facade(SessionStore(clock=clock, **kw))
    make_store = request.getfixturevalue("make_store")
    return lambda **kw: make_store(clock=clock, **kw)


async def test_create_get_update_delete(mk: Any) -> None:
    store = mk()
    s = await store.create("user-1", ttl=7200, metadata={"user_id": "u1"})
    assert s.ttl == 7200 and s.get_metadata("user_id") == "u1" and s.state == "pending"
    assert s.stats == {"accesses": 0} and s.last_worker_id is None and s.affinity == {}
    with pytest.raises(SessionExists):
        await store.create("user-1")
    updated = await store.update("user-1", lambda s: s.put_program("model", {"v": 2}))
    assert updated.get_program("model") == {"v": 2} and updated.stats["accesses"] == 1
    got = await store.get("user-1")
    assert got.get_program("model") == {"v": 2} and got.stats["accesses"] == 2
    assert got.created_at == s.created_at
    await store.set_affinity("user-1", "ml-0.0")
    assert (await store.get("user-1")).last_worker_id == "ml-0.0"
    await store.set_affinity("user-1", None)
    assert (await store.peek("user-1")).last_worker_id is None
    assert await store.delete("user-1") is True
    assert await store.delete("user-1") is False
    with pytest.raises(SessionNotFound):
        await store.get("user-1")
    st = await store.stats()
    assert (st.sessions_created, st.sessions_deleted, st.current_sessions) == (1, 1, 0)


async def test_ttl_with_injected_clock_and_touch_extends_life(mk: Any, clock: Any) -> None:
    store = mk(ttl=10)
    await store.create("a")
    await store.create("b")
    clock.now += 8
    await store.touch("a")
    clock.now += 5
    with pytest.raises(SessionNotFound):
        await store.get("b")
    assert (await store.get("a")).id == "a"
    assert not await store.exists("b")
    assert await store.ids() == ["a"]
    clock.now += 11
    assert await store.sweep() == 1
    st = await store.stats()
    assert st.sessions_expired == 2 and st.current_sessions == 0 and st.cleanup_runs == 1


async def test_peek_does_not_touch_and_get_does(mk: Any, clock: Any) -> None:
    store = mk(ttl=10)
    await store.create("a")
    clock.now += 6
    assert (await store.peek("a")).last_accessed == 1000.0
    clock.now += 6
    with pytest.raises(SessionNotFound):
        await store.peek("a")
    await store.create("b")
    clock.now += 6
    assert (await store.get("b")).last_accessed == clock.now
    clock.now += 6
    assert (await store.peek("b")).remaining(clock.now) == pytest.approx(4)


@pytest.mark.expect_errors("session removal hook")
async def test_sweep_counts_and_removal_hooks(mk: Any, clock: Any) -> None:
    store = mk(ttl=10, heartbeat_timeout=5)
    events: list[tuple[str, str, Any]] = []
    unsubscribe = store.on_remove(lambda sid, reason, s: events.append((sid, reason, s.metadata)))
    store.on_remove(lambda *a: 1 / 0)  # a broken hook never breaks the store
    for i in range(6):
        await store.create(f"s{i}", ttl=10 if i < 3 else 100, metadata={"i": i})
    await store.set_awaiting_input("s3")
    await store.delete("s5")
    clock.now += 6
    await store.heartbeat("s4")
    clock.now += 5
    assert await store.sweep() == 4
    assert sorted(events) == [
        ("s0", "expired", {"i": 0}),
        ("s1", "expired", {"i": 1}),
        ("s2", "expired", {"i": 2}),
        ("s3", "gc", {"i": 3}),
        ("s5", "deleted", {"i": 5}),
    ]
    assert await store.ids() == ["s4"]
    unsubscribe()
    await store.delete("s4")
    assert len(events) == 5
    assert (await store.stats()).sessions_gc == 1


async def test_quota_and_reclaim_of_expired_places(mk: Any, clock: Any) -> None:
    store = mk(ttl=1, max_sessions=2)
    await store.create("a")
    await store.create("b", ttl=100)
    with pytest.raises(SessionQuotaExceeded):
        await store.create("c")
    clock.now += 2  # "a" expired, still holding its place until something reclaims it
    assert await store.count() == 2
    await store.create("c")  # a full store reclaims before it refuses
    assert sorted(await store.ids()) == ["b", "c"]
    with pytest.raises(SessionQuotaExceeded):
        await store.create("d")
    clock.now += 2
    await store.create("c")  # the expired "c" is replaced in place, not a duplicate
    assert (await store.stats()).current_sessions == 2
    with pytest.raises(SessionQuotaExceeded):
        await mk(max_sessions=0).create("none")


async def test_get_or_create_is_idempotent(mk: Any) -> None:
    store = mk()
    a = await store.get_or_create("x", metadata={"k": 1})
    b = await store.get_or_create("x", metadata={"k": 2})
    assert (a.id, a.created_at) == (b.id, b.created_at) and b.get_metadata("k") == 1
    assert b.stats["accesses"] == 1


async def test_update_semantics(mk: Any) -> None:
    store = mk()
    await store.create("a", metadata={"n": 1, "list": [1]})

    def bump(s: Any) -> None:
        s.metadata["n"] += 1
        s.metadata["list"] = [*s.metadata["list"], 2]
        s.stats["calls"] = s.stats.get("calls", 0) + 1

    out = await store.update("a", bump)
    assert out.metadata == {"n": 2, "list": [1, 2]} and out.stats == {"accesses": 1, "calls": 1}
    assert (await store.peek("a")).metadata == {"n": 2, "list": [1, 2]}

    def boom(s: Any) -> None:
        s.metadata["n"] = 99
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await store.update("a", boom)
    assert (await store.peek("a")).metadata["n"] == 2  # nothing changed
    with pytest.raises(ValueError, match="may not change its id"):
        await store.update("a", lambda s: setattr(s, "id", "b"))
    with pytest.raises(ValueError, match="use transition"):
        await store.update("a", lambda s: setattr(s, "state", "running"))
    replaced = await store.update("a", lambda s: s.__class__(s.id, 50.0, s.created_at, 0.0))
    assert replaced.ttl == 50.0 and replaced.metadata == {}
    with pytest.raises(SessionNotFound):
        await store.update("nope", bump)


async def test_the_default_lifecycle_and_its_errors(mk: Any) -> None:
    store = mk()
    await store.create("j")
    assert (await store.transition("j", "running")).state == "running"
    s = await store.transition("j", "input_required")
    assert s.awaiting_input and s.state == "input_required"
    s = await store.transition("j", "running")
    assert not s.awaiting_input
    with pytest.raises(IllegalTransition) as info:
        await store.transition("j", "pending")
    assert info.value.from_state == "running" and "input_required" in info.value.allowed
    with pytest.raises(IllegalTransition):
        await store.transition("j", "no-such-state")
    await store.transition("j", "done")
    with pytest.raises(IllegalTransition, match="terminal"):
        await store.transition("j", "running")
    assert (await store.peek("j")).state == "done"
    with pytest.raises(SessionNotFound):
        await store.transition("absent", "running")


async def test_a_custom_table_replaces_the_default(mk: Any) -> None:
    store = mk(transitions={"queued": {"busy"}, "busy": {"queued", "over"}, "over": set()},
               initial_state="queued")  # fmt: skip
    s = await store.create("q")
    assert s.state == "queued"
    await store.transition("q", "busy")
    await store.transition("q", "queued")
    with pytest.raises(IllegalTransition):
        await store.transition("q", "over")


async def test_heartbeat_gc_of_a_session_awaiting_input(mk: Any, clock: Any) -> None:
    store = mk(ttl=100, heartbeat_timeout=5)
    await store.create("j")
    await store.transition("j", "running")
    await store.transition("j", "input_required")
    clock.now += 4
    await store.heartbeat("j")
    clock.now += 4
    assert await store.sweep() == 0
    clock.now += 2
    await store.get("j")  # an access is not a heartbeat
    assert await store.sweep() == 1
    assert (await store.stats()).sessions_gc == 1


async def test_pins(mk: Any, clock: Any) -> None:
    store = mk(ttl=10)
    await store.create("s")
    await store.pin("s", "ml", "ml-1")
    await store.pin("s", "tok", "tok-2")
    s = await store.peek("s")
    assert s.affinity == {"ml": "ml-1", "tok": "tok-2"} and s.last_worker_id == "tok-2"
    await store.pin("s", "tok", None)
    s = await store.peek("s")
    assert s.affinity == {"ml": "ml-1"} and s.last_worker_id == "tok-2"
    clock.now += 8
    await store.pin("s", "ml", None)  # touches
    clock.now += 8
    s = await store.get("s")
    assert s.affinity == {}
    out = await store.update("s", lambda s: s.affinity.update(ml="ml-9"))
    assert out.affinity == {"ml": "ml-9"} and (await store.peek("s")).affinity == {"ml": "ml-9"}
    for bad in (None, "", 3):
        with pytest.raises(TypeError):
            await store.pin("s", bad, "w")
    with pytest.raises(TypeError):
        await store.pin("s", "ml", "")
    with pytest.raises(SessionNotFound):
        await store.pin("absent", "ml", "w")


@pytest.mark.parametrize("sid", [None, "", 42, b"bytes"])
@pytest.mark.parametrize("op", ["create", "get", "peek", "touch", "delete", "heartbeat"])
async def test_every_operation_refuses_a_bad_session_id(mk: Any, op: str, sid: Any) -> None:
    store = mk()
    with pytest.raises(TypeError, match="session id"):
        await getattr(store, op)(sid)


async def test_bad_options_are_refused(mk: Any) -> None:
    store = mk()
    with pytest.raises(ValueError, match="finite"):
        await store.create("inf", ttl=math.inf)
    with pytest.raises(ValueError):
        await store.create("neg", ttl=-1)
    with pytest.raises(TypeError):
        await store.create("m", metadata=["not", "a", "dict"])
    for bad in ({"ttl": 0}, {"max_sessions": -1}, {"sweep_interval": 0}):
        with pytest.raises(ValueError):
            mk(**bad)


async def test_events_in_commit_order_then_end(mk: Any, clock: Any) -> None:
    store = mk()
    await store.create("u1")
    async with store.subscribe("u1") as sub:
        await store.transition("u1", "running")
        clock.now += 1
        await store.heartbeat("u1")
        await store.publish("u1", {"progress": 0.5})
        with pytest.raises(IllegalTransition):
            await store.transition("u1", "pending")  # emits nothing
        await store.transition("u1", "done")
        await store.delete("u1")
        async with asyncio.timeout(DEADLINE):
            events = [(e.kind, e.data) async for e in sub]
    assert events == [
        ("state", {"from": "pending", "to": "running"}),
        ("heartbeat", {}),
        ("published", {"progress": 0.5}),
        ("state", {"from": "running", "to": "done"}),
        ("end", {"reason": "deleted"}),
    ]
    with pytest.raises(SessionNotFound):
        async with store.subscribe("u1"):
            pass
    with pytest.raises(SessionNotFound):
        await store.publish("u1", 1)


@pytest.mark.parametrize("reason", ["expired", "deleted", "gc"])
async def test_every_removal_path_ends_the_subscription_once(
    mk: Any, clock: Any, reason: str
) -> None:
    store = mk(ttl=10, heartbeat_timeout=5)
    hooks: list[str] = []
    store.on_remove(lambda sid, why, s: hooks.append(why))
    await store.create("u1")
    await store.transition("u1", "running")
    await store.transition("u1", "input_required")
    async with store.subscribe("u1") as sub:
        if reason == "deleted":
            await store.delete("u1")
        elif reason == "gc":
            clock.now += 6
            await store.sweep()
        else:
            clock.now += 11
            with pytest.raises(SessionNotFound):
                await store.get("u1")
        await store.sweep()
        await store.delete("u1")
        async with asyncio.timeout(DEADLINE):
            events = [(e.kind, e.data) async for e in sub]
    assert events == [("end", {"reason": reason})]
    assert hooks == [reason]


async def test_export_import_round_trip(mk: Any, clock: Any) -> None:
    source = mk(ttl=100)
    await source.create("a", metadata={"user": "u1"})
    await source.update("a", lambda s: s.put_program("p", [1, 2, 3]))
    await source.pin("a", "ml", "w-1")
    await source.transition("a", "running")
    clock.now += 30
    data = await source.export("a")
    with pytest.raises(SessionExists):
        await source.import_session(data)
    await source.delete("a")
    s = await source.import_session(data)
    assert s.metadata == {"user": "u1"} and s.programs == {"p": [1, 2, 3]}
    assert s.affinity == {"ml": "w-1"} and s.state == "running" and s.last_worker_id == "w-1"
    assert s.remaining(clock.now) == pytest.approx(70)
    await source.import_session(data, replace=True)
    with pytest.raises(SnapshotError):
        await source.import_session(b"garbage")


async def test_concurrent_creators_never_overshoot(mk: Any) -> None:
    store = mk(max_sessions=50)
    results = await asyncio.gather(
        *(store.create(f"s{i}") for i in range(200)), return_exceptions=True
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, SessionQuotaExceeded)]
    assert len(made) == 50 and len(refused) == 150
    assert (await store.stats()).current_sessions == 50
