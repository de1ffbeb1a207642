"""`Table`: an ETS-like set table, sharded, safe from the event loop and from many threads.

::

    t = aiotp.Table(shards=16)
    t.insert("k", 1); t.insert_new("k", 2)      # -> False: "k" exists
    t.update_counter("hits", 1)                  # atomic, from any thread
    t.update("k", lambda v: v + 1)               # atomic read-modify-write
    t.select(lambda k, v: v > 1)                 # [(key, value), ...]

Each key lives in one shard (``hash(key) & (shards - 1)``), a dict behind its own lock, so
threads touching different keys rarely contend and every single-key operation is atomic. Reads of
one key take no lock at all (see `get`).

Values are copy-on-write: every writer stores a *new* value in one dict assignment and never
changes a stored value in place, which is what makes the lock-free read safe. The table keeps
its side of this (no method mutates a value); `update`'s function must keep yours: return a new
value (``lambda v: v + 1``, ``lambda d: {**d, "n": d["n"] + 1}``, ``attrs.evolve``), never
mutate its argument (``lambda d: d.update(n=1) or d`` lets a reader in another thread see half
of the change, and the change happen to a value it already holds). Store immutable values, or
values nobody mutates once stored, and hand out copies of mutable ones (as `SessionStore` does).
Operations over many keys (`select`, `select_delete`, iteration, `len`) go shard by shard, each
under its own lock only: never one long global lock, so they see a consistent snapshot of each
shard, not of the whole table at one instant (as ETS without a fixed table).

``shards`` is rounded up to a power of two (default 16: enough to keep 8 threads from
contending on a 2-core machine, cheap enough to scan). Keys must be hashable: a `TypeError`
names the key that is not.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs

__all__ = ["Table", "TableInfo"]

_MISSING: Any = object()


@attrs.frozen
class TableInfo:
    size: int
    shards: int
    sizes: tuple[int, ...]
    memory: int  # rough bytes: the shard dicts plus keys and values (shallow)


def _unhashable(key: Any) -> TypeError:
    return TypeError(f"table keys must be hashable, got {type(key).__name__}: {key!r}")


class Table:
    """A sharded, thread-safe set table (see the module docstring)."""

    __slots__ = ("_locks", "_mask", "_shards")

    def __init__(self, shards: int = 16) -> None:
        if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
            raise ValueError(f"shards must be a positive int, got {shards!r}")
        n = 1 << (shards - 1).bit_length()
        self._shards: list[dict[Any, Any]] = [{} for _ in range(n)]
        self._locks = [threading.Lock() for _ in range(n)]
        self._mask = n - 1

    def _slot(self, key: Any) -> int:
        try:
            return hash(key) & self._mask
        except TypeError:
            raise _unhashable(key) from None

    # -- single keys (atomic) ------------------------------------------------------------
    # The hot paths below inline the shard choice (no helper call): a method call is a fifth of
    # the cost of a whole locked dict operation here.
    def insert(self, key: Any, value: Any) -> None:
        try:
            i = hash(key) & self._mask
        except TypeError:
            raise _unhashable(key) from None
        with self._locks[i]:
            self._shards[i][key] = value

    def insert_new(self, key: Any, value: Any) -> bool:
        """Insert only if absent; True when inserted."""
        i = self._slot(key)
        with self._locks[i]:
            shard = self._shards[i]
            if key in shard:
                return False
            shard[key] = value
            return True

    def lookup(self, key: Any, default: Any = _MISSING) -> Any:
        """The value, else `default`; `KeyError` when absent and no default is given."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        """`lookup` that never raises: `default` (None) when absent.

        Reads take no lock: a single dict lookup is atomic in CPython (and per-object locked on
        free-threaded builds), and every writer replaces a value in one dict store (copy-on-write,
        see the module docstring), so a reader sees the value before or after a write, never a
        torn one. That holds only while nobody mutates a stored value in place.
        """
        try:
            return self._shards[hash(key) & self._mask].get(key, default)
        except TypeError:
            raise _unhashable(key) from None

    def __contains__(self, key: Any) -> bool:
        i = self._slot(key)
        with self._locks[i]:
            return key in self._shards[i]

    def delete(self, key: Any) -> bool:
        """Remove `key`; True if it was there."""
        i = self._slot(key)
        with self._locks[i]:
            return self._shards[i].pop(key, _MISSING) is not _MISSING

    def take(self, key: Any, default: Any = None) -> Any:
        """Remove and return the value (``ets:take``), or `default`."""
        i = self._slot(key)
        with self._locks[i]:
            return self._shards[i].pop(key, default)

    def update(self, key: Any, fn: Callable[[Any], Any], default: Any = _MISSING) -> Any:
        """Replace the value with ``fn(value)`` atomically and return it.

        An absent key raises `KeyError`, or starts from `default` when one is given. `fn` runs
        under the shard's lock: keep it short and never touch the table from inside it. `fn`
        must return a new value and leave its argument as it was: lock-free readers (`get`,
        `lookup`) may be holding it (see the module docstring).
        """
        i = self._slot(key)
        with self._locks[i]:
            shard = self._shards[i]
            value = shard.get(key, default)
            if value is _MISSING:
                raise KeyError(key)
            new = fn(value)
            shard[key] = new
            return new

    def update_counter(self, key: Any, increment: int = 1, default: int = 0) -> int:
        """Add `increment` to an integer value (starting at `default`) and return the result."""
        i = self._slot(key)
        with self._locks[i]:
            shard = self._shards[i]
            value = shard.get(key, default) + increment
            shard[key] = value
            return value  # type: ignore[no-any-return]

    # -- many keys (shard by shard) -----------------------------------------------------------
    def select(self, pred: Callable[[Any, Any], bool]) -> list[tuple[Any, Any]]:
        found: list[tuple[Any, Any]] = []
        for lock, shard in zip(self._locks, self._shards, strict=True):
            with lock:
                items = list(shard.items())
            found.extend((k, v) for k, v in items if pred(k, v))
        return found

    def select_delete(self, pred: Callable[[Any, Any], bool]) -> int:
        """Delete every entry matching `pred` (checked under its shard's lock); the count."""
        removed = 0
        for lock, shard in zip(self._locks, self._shards, strict=True):
            with lock:
                doomed = [k for k, v in shard.items() if pred(k, v)]
                for k in doomed:
                    del shard[k]
            removed += len(doomed)
        return removed

    def shard_items(self, index: int) -> list[tuple[Any, Any]]:
        """A snapshot of one shard (for incremental scans)."""
        with self._locks[index]:
            return list(self._shards[index].items())

    @property
    def shard_count(self) -> int:
        return len(self._shards)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """(key, value) pairs from a per-shard snapshot: safe while others write."""
        for i in range(len(self._shards)):
            yield from self.shard_items(i)

    def __len__(self) -> int:
        return sum(len(s) for s in self._shards)  # len() of a dict is atomic under the GIL

    def clear(self) -> None:
        for lock, shard in zip(self._locks, self._shards, strict=True):
            with lock:
                shard.clear()

    def info(self) -> TableInfo:
        sizes = tuple(len(s) for s in self._shards)
        memory = 0
        for lock, shard in zip(self._locks, self._shards, strict=True):
            with lock:
                memory += sys.getsizeof(shard)
                for k, v in shard.items():
                    memory += sys.getsizeof(k) + sys.getsizeof(v)
        return TableInfo(size=sum(sizes), shards=len(sizes), sizes=sizes, memory=memory)

    def __repr__(self) -> str:
        return f"<Table shards={len(self._shards)} size={len(self)}>"
