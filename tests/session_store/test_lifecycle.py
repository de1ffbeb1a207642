"""Session states along a declared transition table: illegal edges, atomicity, heartbeat GC."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from store_helpers import make

import aiotp
from aiotp.session_store.lifecycle import DEFAULT_TRANSITIONS


def test_a_new_session_is_pending_and_moves_along_the_default_table() -> None:
    store, _ = make()
    assert store.create("u1").state == "pending"
    assert store.transition("u1", "running").state == "running"
    s = store.transition("u1", "input_required")
    assert s.state == "input_required" and s.awaiting_input
    assert store.transition("u1", "running").awaiting_input is False
    assert store.transition("u1", "done").state == "done"
    assert store.peek("u1").state == "done"  # terminal, but still stored until TTL / delete


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], "done"),  # pending -> done skips running
        ([], "input_required"),
        ([], "pending"),  # no self loop
        (["running"], "pending"),
        (["running"], "running"),
        (["running", "done"], "running"),  # out of a terminal state
        (["aborted"], "running"),
        (["running", "failed"], "done"),
    ],
)
def test_illegal_edges_are_refused_and_change_nothing(path: list[str], bad: str) -> None:
    store, clock = make()
    store.create("u1")
    for state in path:
        store.transition("u1", state)
    before = store.peek("u1")
    clock.now += 1
    with pytest.raises(aiotp.IllegalTransition) as info:
        store.transition("u1", bad)
    err = info.value
    assert isinstance(err, aiotp.AiotpError) and isinstance(err, ValueError)
    assert (err.session_id, err.from_state, err.to_state) == ("u1", before.state, bad)
    assert f"session 'u1': {before.state} -> {bad} is not allowed" in str(err)
    after = store.peek("u1")
    assert (after.state, after.last_accessed, after.stats) == (
        before.state,
        before.last_accessed,
        before.stats,
    )


def test_the_error_lists_the_legal_next_states() -> None:
    store, _ = make()
    store.create("u1")
    store.transition("u1", "running")
    with pytest.raises(aiotp.IllegalTransition) as info:
        store.transition("u1", "pending")
    assert str(info.value) == (
        "session 'u1': running -> pending is not allowed; "
        "from running: aborted, done, failed, input_required"
    )
    store.transition("u1", "done")
    with pytest.raises(aiotp.IllegalTransition, match="terminal"):
        store.transition("u1", "running")


@pytest.mark.parametrize("state", ["bogus", "", "RUNNING", None, 3])
def test_a_state_not_in_the_table_is_an_illegal_transition(state: Any) -> None:
    store, _ = make()
    store.create("u1")
    with pytest.raises(aiotp.IllegalTransition):
        store.transition("u1", state)
    assert store.peek("u1").state == "pending"


def test_transition_of_an_absent_or_expired_session_is_not_found() -> None:
    store, clock = make(ttl=10)
    with pytest.raises(aiotp.SessionNotFound):
        store.transition("nobody", "running")
    store.create("u1")
    clock.now += 11
    with pytest.raises(aiotp.SessionNotFound):
        store.transition("u1", "running")
    assert store.stats().sessions_expired == 1


def test_transition_touches_the_session() -> None:
    store, clock = make(ttl=10)
    store.create("u1")
    clock.now += 8
    store.transition("u1", "running")
    clock.now += 8  # 16 s after creation, 8 after the transition
    assert store.get("u1").state == "running"


def test_update_may_not_change_state_behind_the_table() -> None:
    store, _ = make()
    store.create("u1")

    def cheat(s: aiotp.Session) -> None:
        s.put_metadata("x", 1)
        s.state = "done"

    with pytest.raises(ValueError, match="use transition"):
        store.update("u1", cheat)
    s = store.peek("u1")
    assert s.state == "pending" and "x" not in s.metadata


def test_pending_may_be_aborted_or_failed_before_it_starts() -> None:
    store, _ = make()
    store.create("a")
    store.create("f")
    assert store.transition("a", "aborted").state == "aborted"
    assert store.transition("f", "failed").state == "failed"


def test_entering_input_required_starts_the_heartbeat_gc_and_leaving_stops_it() -> None:
    store, clock = make(ttl=1000, heartbeat_timeout=5)
    store.create("waits")
    store.create("answered")
    for sid in ("waits", "answered"):
        store.transition(sid, "running")
        clock.now += 100  # long before: the GC must count from entering input_required
        store.transition(sid, "input_required")
    clock.now += 3
    store.transition("answered", "running")  # leaves: awaiting_input False
    clock.now += 3  # 6 s since "waits" entered input_required, no heartbeat
    assert store.sweep() == 1
    assert "waits" not in store and store.peek("answered").awaiting_input is False
    assert store.stats().sessions_gc == 1


def test_a_heartbeat_keeps_a_session_awaiting_input_alive() -> None:
    store, clock = make(ttl=1000, heartbeat_timeout=5)
    store.create("s")
    store.transition("s", "running")
    store.transition("s", "input_required")
    for _ in range(4):
        clock.now += 4
        store.heartbeat("s")
        assert store.sweep() == 0
    clock.now += 6
    assert store.sweep() == 1


def test_set_awaiting_input_keeps_working_without_a_state() -> None:
    store, clock = make(ttl=1000, heartbeat_timeout=5)
    store.create("s")
    store.set_awaiting_input("s")
    assert store.peek("s").awaiting_input and store.peek("s").state == "pending"
    clock.now += 6
    assert store.sweep() == 1


def test_a_custom_table_replaces_the_default() -> None:
    table = {"queued": {"working"}, "working": {"queued", "finished"}, "finished": set()}
    store, _ = make(transitions=table, initial_state="queued")
    assert store.create("j").state == "queued"
    store.transition("j", "working")
    store.transition("j", "queued")  # legal here, not in the default table
    with pytest.raises(aiotp.IllegalTransition):
        store.transition("j", "running")  # a default state this table does not have
    table["queued"].add("finished")  # the store took its own copy
    with pytest.raises(aiotp.IllegalTransition):
        store.transition("j", "finished")
    assert store.transitions["queued"] == frozenset({"working"})


@pytest.mark.parametrize(
    ("table", "initial", "culprit"),
    [
        ({"a": {"b"}}, "a", "'b'"),  # unknown target
        ({"a": {"b"}, "b": set()}, "c", "'c'"),  # initial state not in the table
        ({"a": set()}, "pending", "'pending'"),
        ({}, "a", "non-empty"),
        ({"a": "b"}, "a", "'a'"),  # a string, not a set of states
        ({"": set()}, "", "''"),
        ({1: set()}, 1, "1"),
    ],
)
def test_a_bad_table_is_refused_at_construction(table: Any, initial: Any, culprit: str) -> None:
    with pytest.raises(ValueError) as info:
        aiotp.SessionStore(transitions=table, initial_state=initial)
    assert culprit in str(info.value)


def test_the_default_initial_state_must_be_in_a_custom_table() -> None:
    with pytest.raises(ValueError, match="initial_state 'pending'"):
        aiotp.SessionStore(transitions={"a": set()})


def test_the_default_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        DEFAULT_TRANSITIONS["done"] = frozenset({"running"})  # type: ignore[index]


def race(store: aiotp.SessionStore, sid: str, targets: list[str]) -> list[str]:
    """Each target in its own thread, all released at once; returns the targets that won."""
    barrier = threading.Barrier(len(targets))
    won: list[str] = []
    lost: list[aiotp.IllegalTransition] = []

    def move(target: str) -> None:
        barrier.wait(5)
        try:
            store.transition(sid, target)
            won.append(target)
        except aiotp.IllegalTransition as exc:
            lost.append(exc)

    threads = [threading.Thread(target=move, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a thread missed its deadline"
    assert len(won) + len(lost) == len(targets)
    assert all(e.from_state == store.peek(sid).state for e in lost)
    return won


@pytest.mark.usefixtures("fast_switching")
def test_of_eight_threads_racing_pending_to_running_exactly_one_wins() -> None:
    """Check-then-set outside the lock would let several threads all see "pending"; under the
    shard lock exactly one moves it and the others see "running -> running"."""
    store = aiotp.SessionStore()
    for round_ in range(50):
        sid = f"job-{round_}"
        store.create(sid)
        assert len(race(store, sid, ["running"] * 8)) == 1
        assert store.peek(sid).stats["accesses"] == 1  # one transition committed, one touch


@pytest.mark.usefixtures("fast_switching")
def test_competing_terminal_transitions_commit_exactly_one_outcome() -> None:
    store = aiotp.SessionStore()
    for round_ in range(50):
        sid = f"job-{round_}"
        store.create(sid)
        store.transition(sid, "running")
        won = race(store, sid, ["done", "failed", "aborted"])
        assert len(won) == 1 and store.peek(sid).state == won[0]


def test_odd_tables_and_states_get_the_promised_errors() -> None:
    with pytest.raises(ValueError, match="non-empty strings"):
        aiotp.SessionStore(transitions={"a": [["b"]]}, initial_state="a")
    with pytest.raises(ValueError, match="non-empty strings"):
        aiotp.SessionStore(transitions={"a": [1]}, initial_state="a")
    store, _ = make()
    store.create("u1")
    with pytest.raises(aiotp.IllegalTransition):
        store.transition("u1", ["running"])  # type: ignore[arg-type]


def test_a_store_that_starts_sessions_awaiting_input_closes_them_without_heartbeats() -> None:
    store, clock = make(
        transitions={"input_required": {"done"}, "done": set()},
        initial_state="input_required",
        heartbeat_timeout=5,
    )
    store.create("u1")
    assert store.peek("u1").awaiting_input
    clock.now += 6
    assert store.sweep() == 1 and store.stats().sessions_gc == 1
