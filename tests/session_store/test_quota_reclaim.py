"""A full store reclaims its expired sessions before it refuses a create."""

from __future__ import annotations

import threading

import pytest
from store_helpers import make

import aiotp


def test_a_full_store_of_expired_sessions_admits_a_create_without_a_sweep() -> None:
    store, clock = make(ttl=10, max_sessions=3)
    removed: list[tuple[str, str]] = []
    store.on_remove(lambda sid, why, s: removed.append((sid, why)))
    for sid in ("a", "b", "c"):
        store.create(sid)
    subs = {sid: store.subscribe(sid) for sid in ("a", "b", "c")}
    clock.now += 11
    store.create("d")  # no sweep() called by the test
    assert store.ids() == ["d"] and len(store) == 1
    assert sorted(removed) == [("a", "expired"), ("b", "expired"), ("c", "expired")]
    st = store.stats()
    assert (st.sessions_expired, st.sessions_created, st.current_sessions) == (3, 4, 1)
    for sub in subs.values():
        assert (sub.get_nowait().kind, sub.closed) == ("end", True)


def test_a_store_full_of_live_sessions_still_refuses() -> None:
    store, clock = make(ttl=10, max_sessions=3)
    for sid in ("a", "b", "c"):
        store.create(sid)
    clock.now += 5
    with pytest.raises(aiotp.SessionQuotaExceeded, match="max_sessions=3"):
        store.create("d")
    assert sorted(store.ids()) == ["a", "b", "c"] and len(store) == 3


def test_only_the_expired_places_are_reclaimed() -> None:
    store, clock = make(ttl=10, max_sessions=3)
    store.create("old")
    clock.now += 6
    store.create("young1")
    store.create("young2")
    clock.now += 5  # old expired, the young ones not
    store.create("new")
    with pytest.raises(aiotp.SessionQuotaExceeded):
        store.create("one-too-many")
    assert sorted(store.ids()) == ["new", "young1", "young2"]


def test_max_sessions_zero_refuses_everything() -> None:
    store, _ = make(max_sessions=0)
    with pytest.raises(aiotp.SessionQuotaExceeded):
        store.create("a")
    assert len(store) == 0


def test_concurrent_creators_on_a_full_store_never_overshoot() -> None:
    store, clock = make(ttl=10, max_sessions=50)
    removed: list[str] = []
    store.on_remove(lambda sid, why, s: removed.append(sid))
    for i in range(50):
        store.create(f"old-{i}")
    clock.now += 11
    results: list[str] = []
    barrier = threading.Barrier(8)

    def creator(t: int) -> None:
        barrier.wait(5)
        for i in range(20):
            try:
                store.create(f"new-{t}-{i}")
                results.append("ok")
            except aiotp.SessionQuotaExceeded:
                results.append("full")

    threads = [threading.Thread(target=creator, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert results.count("ok") == 50 and results.count("full") == 110
    assert len(store) == 50 and len(store.ids()) == 50
    assert sorted(removed) == sorted(f"old-{i}" for i in range(50))  # each removed once


def test_a_flood_of_creates_on_a_full_live_store_sweeps_once_a_second() -> None:
    """Refusing costs a sweep only when the last one freed something or a second passed: a
    flood of refused creates must not sweep the whole store each."""
    now = [0.0]
    store = aiotp.SessionStore(ttl=60, max_sessions=3, clock=lambda: now[0])
    for i in range(3):
        store.create(f"live{i}")
    sweeps = store.stats().cleanup_runs
    for i in range(100):
        with pytest.raises(aiotp.SessionQuotaExceeded):
            store.create(f"new{i}")
    assert store.stats().cleanup_runs == sweeps + 1
    now[0] += 1.0
    with pytest.raises(aiotp.SessionQuotaExceeded):
        store.create("later")
    assert store.stats().cleanup_runs == sweeps + 2


def test_a_removal_hook_that_creates_during_a_reclaim_does_not_deadlock() -> None:
    now = [0.0]
    store = aiotp.SessionStore(ttl=10, max_sessions=2, shards=1, clock=lambda: now[0])
    store.create("a")
    store.create("b")
    now[0] = 100.0  # both expired: the next create reclaims, and the hook creates meanwhile
    made: list[str] = []

    def respawn(session_id: str, _reason: str, _session: object) -> None:
        name = f"again-{session_id}"
        store.create(name)
        made.append(name)

    store.on_remove(respawn)
    done: list[BaseException | None] = []

    def create() -> None:
        try:
            store.create("c")
            done.append(None)
        except BaseException as exc:  # the hook's creates took the room: refused, not hung
            done.append(exc)

    worker = threading.Thread(target=create)
    worker.start()
    worker.join(10.0)
    assert not worker.is_alive(), "create() deadlocked in its own reclaim"
    assert sorted(made) == ["again-a", "again-b"]
    assert isinstance(done[0], aiotp.SessionQuotaExceeded) and len(store) == 2


def test_a_clock_going_backwards_ends_the_reclaim_pause() -> None:
    now = [1000.0]
    store = aiotp.SessionStore(ttl=100, max_sessions=1, clock=lambda: now[0])
    store.create("a")
    with pytest.raises(aiotp.SessionQuotaExceeded):
        store.create("b")  # a fruitless reclaim at t=1000
    now[0] = 0.0
    store.delete("a")
    store.create("y", ttl=1)
    now[0] = 50.0  # y expired long ago
    store.create("z")
