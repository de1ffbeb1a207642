from __future__ import annotations

import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import aiotp


def test_basic_operations() -> None:
    t = aiotp.Table(shards=5)
    assert t.shard_count == 8  # rounded up to a power of two
    t.insert("a", 1)
    assert t.insert_new("a", 2) is False
    assert t.insert_new("b", 2) is True
    assert t.lookup("a") == 1
    assert t.lookup("zz", None) is None
    with pytest.raises(KeyError):
        t.lookup("zz")
    assert t.get("zz", 7) == 7
    assert t.update("a", lambda v: v + 10) == 11
    with pytest.raises(KeyError):
        t.update("missing", lambda v: v)
    assert t.update("new", lambda v: v + 1, default=0) == 1
    assert t.update_counter("hits") == 1
    assert t.update_counter("hits", 5) == 6
    assert sorted(t.select(lambda k, v: isinstance(v, int) and v > 1)) == [
        ("a", 11),
        ("b", 2),
        ("hits", 6),
    ]
    assert t.select_delete(lambda k, v: k in ("a", "b")) == 2
    assert t.delete("hits") is True and t.delete("hits") is False
    assert len(t) == 1 and dict(t) == {"new": 1}
    info = t.info()
    assert info.size == 1 and info.shards == 8 and sum(info.sizes) == 1 and info.memory > 0
    t.clear()
    assert len(t) == 0


def test_unhashable_key_raises_type_error_naming_it() -> None:
    t = aiotp.Table()
    with pytest.raises(TypeError, match=r"\['not', 'hashable'\]"):
        t.insert(["not", "hashable"], 1)
    with pytest.raises(ValueError):
        aiotp.Table(shards=0)


def test_threads_hammering_update_counter_lose_no_update() -> None:
    t = aiotp.Table(shards=16)
    keys = [f"k{i}" for i in range(8)]
    per_thread = 100_000
    barrier = threading.Barrier(8)

    def hammer(n: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            t.update_counter(keys[(i + n) % len(keys)])

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(t.lookup(k) for k in keys) == 8 * per_thread


def test_insert_new_is_atomic_across_threads() -> None:
    t = aiotp.Table()
    winners: list[int] = []
    barrier = threading.Barrier(8)

    def race(n: int) -> None:
        barrier.wait()
        for i in range(2000):
            if t.insert_new(i, n):
                winners.append(i)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(winners) == list(range(2000))


class TableMachine(RuleBasedStateMachine):
    """The table behaves as a dict, whatever the sequence of operations."""

    def __init__(self) -> None:
        super().__init__()
        self.table = aiotp.Table(shards=4)
        self.model: dict[int, int] = {}

    keys = st.integers(0, 20)

    @rule(k=keys, v=st.integers())
    def insert(self, k: int, v: int) -> None:
        self.table.insert(k, v)
        self.model[k] = v

    @rule(k=keys, v=st.integers())
    def insert_new(self, k: int, v: int) -> None:
        assert self.table.insert_new(k, v) == (k not in self.model)
        self.model.setdefault(k, v)

    @rule(k=keys)
    def delete(self, k: int) -> None:
        assert self.table.delete(k) == (k in self.model)
        self.model.pop(k, None)

    @rule(k=keys, n=st.integers(-5, 5))
    def counter(self, k: int, n: int) -> None:
        assert self.table.update_counter(k, n) == self.model.get(k, 0) + n
        self.model[k] = self.model.get(k, 0) + n

    @rule(limit=st.integers())
    def select_delete(self, limit: int) -> None:
        doomed = [k for k, v in self.model.items() if v > limit]
        assert self.table.select_delete(lambda k, v: v > limit) == len(doomed)
        for k in doomed:
            del self.model[k]

    @invariant()
    def same_as_model(self) -> None:
        assert dict(self.table) == self.model
        assert len(self.table) == len(self.model)


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
