"""The session store's thread-safety promises, checked from real threads.

Each test widens a race window on purpose (a pause inside the update function, a slow clock, a
reader that takes its time) so that a store handing out or mutating live sessions fails it
reliably, not once in a thousand runs. Every wait has a deadline; nothing asserts on timing.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import aiotp

DEADLINE = 10.0  # seconds any one wait may take before the test gives up


def run_threads(*targets: Callable[[], None]) -> None:
    """Run each target in its own thread; re-raise the first failure; never hang."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(t), daemon=True) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(DEADLINE)
    assert not any(th.is_alive() for th in threads), "a thread missed its deadline"
    if errors:
        raise errors[0]


@pytest.mark.usefixtures("fast_switching")
def test_reader_never_sees_a_half_applied_update() -> None:
    """Two fields that every update sets together are equal in every session a reader gets."""
    store = aiotp.SessionStore()
    store.create("s", metadata={"worker": None})
    writers_done = threading.Event()
    torn: list[tuple[Any, Any]] = []
    seen = 0

    def writer(name: str) -> Callable[[], None]:
        def run() -> None:
            for i in range(150):
                tag = f"{name}-{i}"

                def assign(s: aiotp.Session, tag: str = tag) -> None:
                    s.last_worker_id = tag
                    time.sleep(0.0002)  # widen the window between the two writes
                    s.metadata["worker"] = tag

                store.update("s", assign)

        return run

    def reader() -> None:
        nonlocal seen
        for _ in range(1_000_000):
            s = store.get("s")
            time.sleep(0)  # a reader that takes its time: let a writer run meanwhile
            first = s.last_worker_id
            time.sleep(0)
            second = s.get_metadata("worker")
            seen += 1
            if first != second:
                torn.append((first, second))
            if writers_done.is_set():
                return

    def writers() -> None:
        run_threads(writer("a"), writer("b"))
        writers_done.set()

    run_threads(reader, writers)
    assert seen > 0
    assert not torn, f"{len(torn)} of {seen} reads saw a half-applied update, e.g. {torn[0]}"


def test_update_racing_delete_returns_the_updated_session() -> None:
    """Once `fn` has run, `update` returns the session it built, even if a delete follows at once.

    The update thread's clock is slow after `fn` ran: a store that looks the session up again
    after applying the change lets the delete in there, and reports a completed update as
    `SessionNotFound`.
    """
    for round_ in range(20):
        _race_update_with_delete(round_)


def _race_update_with_delete(round_: int) -> None:
    updater: list[int] = []
    fn_ran = threading.Event()
    deleted = threading.Event()
    result: list[aiotp.Session] = []

    def clock() -> float:
        if fn_ran.is_set() and threading.get_ident() in updater:
            deleted.wait(0.5)  # slow, not stuck: the delete may never come (and need not)
        return time.monotonic()

    store = aiotp.SessionStore(clock=clock)
    store.create("s")

    def bump(s: aiotp.Session) -> None:
        s.put_metadata("round", round_)
        s.put_program("p", round_)
        fn_ran.set()

    def update() -> None:
        updater.append(threading.get_ident())
        try:
            result.append(store.update("s", bump))
        except aiotp.SessionNotFound:
            assert not fn_ran.is_set(), "update raised SessionNotFound after fn ran"

    def delete() -> None:
        assert fn_ran.wait(DEADLINE)
        store.delete("s")
        deleted.set()

    run_threads(update, delete)
    assert fn_ran.is_set() and len(result) == 1
    (s,) = result
    assert s.get_metadata("round") == round_ and s.get_program("p") == round_
    assert "s" not in store


def test_session_held_by_a_reader_is_not_changed_by_a_later_update() -> None:
    """A session you got is a snapshot: updates from other threads never reach into it."""
    store = aiotp.SessionStore()
    store.create("s", metadata={"v": 0})
    held = store.get("s")
    accesses = held.stats["accesses"]
    halfway = threading.Event()
    looked = threading.Event()
    observed: list[tuple[Any, Any, Any]] = []

    def writer() -> None:
        def change(s: aiotp.Session) -> None:
            s.put_metadata("v", 1)
            s.last_worker_id = "w-1"
            halfway.set()
            assert looked.wait(DEADLINE)

        store.update("s", change)
        store.get("s")  # a touch is an update too

    def reader() -> None:
        assert halfway.wait(DEADLINE)
        observed.append((held.get_metadata("v"), held.last_worker_id, held.stats["accesses"]))
        looked.set()

    run_threads(writer, reader)
    assert observed == [(0, None, accesses)]
    assert (held.get_metadata("v"), held.last_worker_id) == (0, None)
    assert held.stats["accesses"] == accesses
    now = store.peek("s")
    assert (now.get_metadata("v"), now.last_worker_id) == (1, "w-1")


def test_mutating_a_held_session_does_not_change_the_store() -> None:
    """Changes go through `update`; a session in hand is the caller's own copy."""
    store = aiotp.SessionStore()
    held = store.create("s", metadata={"v": 0})
    held.put_metadata("v", 99)
    held.last_worker_id = "rogue"
    got = store.get("s")
    got.put_program("p", 1)
    now = store.peek("s")
    assert (now.get_metadata("v"), now.last_worker_id, now.get_program("p")) == (0, None, None)


def _same_shard_ids(shards: int, n: int) -> list[str]:
    """`n` ids that land in one shard (``hash(key) & (shards - 1)``, see aiotp.Table)."""
    by_shard: dict[int, list[str]] = {}
    for i in range(100_000):
        sid = f"s{i}"
        ids = by_shard.setdefault(hash(sid) & (shards - 1), [])
        ids.append(sid)
        if len(ids) == n:
            return ids
    raise AssertionError("no shard got enough ids")


@pytest.mark.usefixtures("fast_switching")
def test_snapshot_taken_while_writers_run_restores_a_per_shard_consistent_state(
    tmp_path: Path,
) -> None:
    """Sessions of one shard are saved as of one instant, each one whole.

    A writer moves three sessions of one shard to generation g+1 one after the other, setting
    two fields per session. At any instant the earlier sessions are at most one generation
    ahead of the later ones, and each session's two fields agree; a snapshot copied under the
    shard's lock keeps both facts.
    """
    store = aiotp.SessionStore(shards=4)
    ids = _same_shard_ids(4, 3)
    for sid in ids:
        store.create(sid, metadata={"gen": 0})
        store.update(sid, lambda s: s.put_program("gen", 0))
    for i in range(3_000):  # other sessions: a snapshot takes long enough for writers to run
        store.create(f"filler-{i}")
    stop = threading.Event()
    broken: list[str] = []
    rounds = 0

    def writer() -> None:
        for gen in range(1, 1_000_000):
            for sid in ids:

                def advance(s: aiotp.Session, gen: int = gen) -> None:
                    s.put_metadata("gen", gen)
                    time.sleep(0.0001)  # let the snapshot thread run between the two writes
                    s.put_program("gen", gen)

                store.update(sid, advance)
            if stop.is_set():
                return

    def check(path: Path) -> str | None:
        restored = aiotp.SessionStore.restore(str(path), shards=4)
        gens = []
        for sid in ids:
            s = restored.peek(sid)
            if s.get_metadata("gen") != s.get_program("gen"):
                return f"{sid} saved half-updated: {s.metadata} vs {s.programs}"
            gens.append(s.get_metadata("gen"))
        if not all(0 <= a - b <= 1 for a, b in itertools.pairwise(gens)):
            return f"generations {gens} never existed together in the store"
        return None

    def snapshotter() -> None:
        nonlocal rounds
        try:
            path = tmp_path / "sessions.snap"
            for rounds in range(1, 51):  # noqa: B007 (read after the loop)
                store.snapshot(str(path))
                problem = check(path)
                if problem is not None:
                    broken.append(problem)
                    return
        finally:
            stop.set()

    run_threads(writer, snapshotter)
    assert not broken, f"snapshot {rounds}: {broken[0]}"


class HandedOutSessionsMachine(RuleBasedStateMachine):
    """Every session the store hands out keeps the state it had when handed out, whatever the
    store does next, and changing it never changes the store."""

    ids = st.sampled_from(["a", "b", "c"])
    values = st.integers(0, 5)

    def __init__(self) -> None:
        super().__init__()
        self.store = aiotp.SessionStore()
        self.model: dict[str, dict[str, Any]] = {}  # id -> the fields the store should hold
        self.held: list[tuple[aiotp.Session, dict[str, Any]]] = []  # copy, state at hand-out

    @staticmethod
    def fields(s: aiotp.Session) -> dict[str, Any]:
        return {
            "metadata": dict(s.metadata),
            "programs": dict(s.programs),
            "worker": s.last_worker_id,
        }

    def hand_out(self, s: aiotp.Session) -> None:
        assert self.fields(s) == self.model[s.id]
        self.held.append((s, self.fields(s)))

    @rule(sid=ids)
    def create(self, sid: str) -> None:
        if sid in self.model:
            return
        self.model[sid] = {"metadata": {}, "programs": {}, "worker": None}
        self.hand_out(self.store.create(sid))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))
        self.hand_out(self.store.get(sid))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), key=st.sampled_from(["k", "m"]), value=values)
    def update(self, data: st.DataObject, key: str, value: int) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))
        updated = self.store.update(sid, lambda s: s.put_metadata(key, value))
        self.model[sid]["metadata"][key] = value
        self.hand_out(updated)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), value=values)
    def replace_program(self, data: st.DataObject, value: int) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))

        def replace(s: aiotp.Session) -> aiotp.Session:
            s.put_program("p", value)
            return s

        self.model[sid]["programs"]["p"] = value
        self.hand_out(self.store.update(sid, replace))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), worker=st.sampled_from(["w-0", "w-1", None]))
    def set_affinity(self, data: st.DataObject, worker: str | None) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))
        self.store.set_affinity(sid, worker)
        self.model[sid]["worker"] = worker

    @precondition(lambda self: self.held)
    @rule(data=st.data(), value=values)
    def mutate_a_held_session(self, data: st.DataObject, value: int) -> None:
        s, expected = data.draw(st.sampled_from(self.held))
        s.put_metadata("k", value)
        s.put_program("p", value)
        s.last_worker_id = "rogue"
        expected["metadata"]["k"] = value
        expected["programs"]["p"] = value
        expected["worker"] = "rogue"

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.model)))
        assert self.store.delete(sid) is True
        del self.model[sid]

    @invariant()
    def held_sessions_keep_their_state(self) -> None:
        for s, expected in self.held:
            assert self.fields(s) == expected

    @invariant()
    def store_holds_the_model(self) -> None:
        for sid, expected in self.model.items():
            assert self.fields(self.store.peek(sid)) == expected


TestHandedOutSessionsMachine = HandedOutSessionsMachine.TestCase
TestHandedOutSessionsMachine.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)


def test_session_copy_copies_every_field_and_shares_no_dict() -> None:
    """`Session.copy` fills slots by hand for speed: a field added later must not be missed."""
    values: dict[str, Any] = {
        "id": "s",
        "ttl": 7.0,
        "created_at": 1.0,
        "last_accessed": 2.0,
        "metadata": {"m": 1},
        "programs": {"p": 2},
        "last_worker_id": "w-1",
        "stats": {"accesses": 3},
        "awaiting_input": True,
        "last_heartbeat": 4.0,
        "state": "running",
        "affinity": {"ml": "w-1"},
    }
    assert sorted(values) == sorted(f.name for f in attrs.fields(aiotp.Session))
    original = aiotp.Session(**values)
    copy = original.copy()
    assert attrs.asdict(copy) == values
    for name in ("metadata", "programs", "stats", "affinity"):
        assert getattr(copy, name) is not getattr(original, name)


def test_update_whose_fn_raises_changes_nothing() -> None:
    """`fn` works on a copy: if it raises half way, the stored session is as it was."""
    store = aiotp.SessionStore()
    store.create("s", metadata={"v": 0})
    before = store.peek("s")

    def half_then_fail(s: aiotp.Session) -> None:
        s.put_metadata("v", 1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.update("s", half_then_fail)
    after = store.peek("s")
    assert after.metadata == {"v": 0} and after.stats == before.stats
