"""Per-pool affinity (`pin`), `set_affinity`, and session ids checked by every operation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import aiotp


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pin_sets_one_pool_and_the_last_worker() -> None:
    store = aiotp.SessionStore()
    store.create("u1")
    store.pin("u1", "ml", "ml-0.3")
    store.pin("u1", "tok", "tok-1.0")
    s = store.get("u1")
    assert s.affinity == {"ml": "ml-0.3", "tok": "tok-1.0"}
    assert s.last_worker_id == "tok-1.0"


def test_pin_none_unpins_one_pool_and_keeps_the_last_worker() -> None:
    store = aiotp.SessionStore()
    store.create("u1")
    store.pin("u1", "ml", "ml-0.3")
    store.pin("u1", "tok", "tok-1.0")
    store.pin("u1", "ml", None)
    store.pin("u1", "never-pinned", None)  # nothing to remove: fine
    s = store.peek("u1")
    assert s.affinity == {"tok": "tok-1.0"} and s.last_worker_id == "tok-1.0"


def test_pin_touches_the_session() -> None:
    clock = Clock()
    store = aiotp.SessionStore(ttl=10, clock=clock)
    store.create("u1")
    clock.now += 8
    store.pin("u1", "ml", "w")
    clock.now += 8
    assert store.peek("u1").affinity == {"ml": "w"}


def test_a_session_in_hand_never_sees_a_later_pin() -> None:
    store = aiotp.SessionStore()
    store.create("u1")
    store.pin("u1", "ml", "a")
    held = store.get("u1")
    store.pin("u1", "ml", "b")
    held.affinity["ml"] = "mutated"  # the caller's own copy: reaches nothing stored
    assert held.affinity == {"ml": "mutated"}
    assert store.peek("u1").affinity == {"ml": "b"}


def test_update_may_edit_affinity_on_its_copy() -> None:
    store = aiotp.SessionStore()
    store.create("u1")
    store.pin("u1", "ml", "a")
    before = store.peek("u1")
    store.update("u1", lambda s: s.affinity.update(ml="b"))
    assert store.peek("u1").affinity == {"ml": "b"} and before.affinity == {"ml": "a"}


@pytest.mark.parametrize("worker", [1, b"w", "", ["w"], object()])
def test_pin_and_set_affinity_refuse_a_worker_id_that_is_not_a_string(worker: Any) -> None:
    store = aiotp.SessionStore()
    store.create("u1")
    with pytest.raises(TypeError, match="worker id"):
        store.pin("u1", "ml", worker)
    with pytest.raises(TypeError, match="worker id"):
        store.set_affinity("u1", worker)
    s = store.peek("u1")
    assert s.affinity == {} and s.last_worker_id is None


@pytest.mark.parametrize("pool", [None, "", 3, b"ml"])
def test_pin_refuses_a_pool_name_that_is_not_a_string(pool: Any) -> None:
    store = aiotp.SessionStore()
    store.create("u1")
    with pytest.raises(TypeError, match="pool name"):
        store.pin("u1", pool, "w")


def test_set_affinity_keeps_its_meaning() -> None:
    store = aiotp.SessionStore()
    store.create("u1")
    store.set_affinity("u1", "w-1")
    assert store.peek("u1").last_worker_id == "w-1" and store.peek("u1").affinity == {}
    store.set_affinity("u1", None)
    assert store.peek("u1").last_worker_id is None


def test_pin_on_an_absent_session_is_not_found() -> None:
    store = aiotp.SessionStore()
    with pytest.raises(aiotp.SessionNotFound):
        store.pin("nobody", "ml", "w")


OPS: dict[str, Callable[[aiotp.SessionStore, Any], Any]] = {
    "create": lambda st, sid: st.create(sid),
    "get": lambda st, sid: st.get(sid),
    "peek": lambda st, sid: st.peek(sid),
    "touch": lambda st, sid: st.touch(sid),
    "update": lambda st, sid: st.update(sid, lambda s: None),
    "delete": lambda st, sid: st.delete(sid),
    "get_or_create": lambda st, sid: st.get_or_create(sid),
    "set_affinity": lambda st, sid: st.set_affinity(sid, "w"),
    "pin": lambda st, sid: st.pin(sid, "ml", "w"),
    "heartbeat": lambda st, sid: st.heartbeat(sid),
    "set_awaiting_input": lambda st, sid: st.set_awaiting_input(sid),
    "transition": lambda st, sid: st.transition(sid, "running"),
    "publish": lambda st, sid: st.publish(sid, 1),
    "subscribe": lambda st, sid: st.subscribe(sid),
    "export": lambda st, sid: st.export(sid),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("sid", ["", None, 3, b"u1", ("u1",)])
def test_every_operation_refuses_a_bad_session_id_naming_it(op: str, sid: Any) -> None:
    store = aiotp.SessionStore()
    with pytest.raises(TypeError) as info:
        OPS[op](store, sid)
    assert "session id" in str(info.value) and repr(sid) in str(info.value)
    assert len(store) == 0 and store.stats().subscribers == 0
