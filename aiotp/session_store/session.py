"""`Session`: what a store keeps per session id.

A session carries metadata (who it belongs to), programs (named state a worker built for it: a
loaded model, a compiled query), the worker that served it last (``last_worker_id``) and the
worker it is pinned to in each pool (``affinity``: pool name -> worker id), its lifecycle
``state`` (``"pending"`` by default; moved only by `SessionStore.transition`, along the store's
transition table, see `aiotp.session_store.lifecycle`), usage stats, and its timing:
``created_at`` (wall clock, for humans), ``last_accessed`` (the store's monotonic clock, for the
TTL), ``ttl`` in seconds. A session expires ``ttl`` seconds after it was last accessed;
an expired session counts as absent everywhere, even before a sweep removes it.

A `Session` object is never shared between threads by the store: every session the store hands
out (`get`, `peek`, `create`, `update`, removal hooks) is the caller's own copy, a snapshot of
one committed state, which no later update reaches into and whose changes reach nothing. To
change the stored session, go through `SessionStore.update`, which runs your function on a
fresh copy under the session's shard lock and swaps the result in. `copy` copies the four
dicts, not the objects in them: a program or metadata value is shared, so replace it
(``s.put_program("model", new)``), never mutate it in place.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Session"]

_MISSING: Any = object()
_new = object.__new__


@attrs.define(eq=False)
class Session:
    id: str
    ttl: float
    created_at: float
    last_accessed: float
    metadata: dict[str, Any] = attrs.field(factory=dict)
    programs: dict[str, Any] = attrs.field(factory=dict)
    last_worker_id: str | None = None
    stats: dict[str, int] = attrs.field(factory=lambda: {"accesses": 0})
    #: Heartbeat GC: a session awaiting input with no heartbeat for the store's
    #: ``heartbeat_timeout`` is closed (reason "gc").
    awaiting_input: bool = False
    last_heartbeat: float = 0.0
    #: Where the session stands in the store's transition table (`SessionStore.transition`).
    state: str = "pending"
    #: Pool name -> the worker id the session is pinned to in that pool (`SessionStore.pin`).
    affinity: dict[str, str] = attrs.field(factory=dict)

    def copy(self) -> Session:
        """A copy sharing no dict with this session (the values in the dicts are shared).

        Fills the slots directly, not through `attrs.evolve` or ``__init__``: it is on every
        read path of the store, and this costs half as much. A test pins that it copies every
        field.
        """
        new: Session = _new(Session)
        new.id = self.id
        new.ttl = self.ttl
        new.created_at = self.created_at
        new.last_accessed = self.last_accessed
        new.metadata = self.metadata.copy()
        new.programs = self.programs.copy()
        new.last_worker_id = self.last_worker_id
        new.stats = self.stats.copy()
        new.awaiting_input = self.awaiting_input
        new.last_heartbeat = self.last_heartbeat
        new.state = self.state
        new.affinity = self.affinity.copy()
        return new

    def _touched(self, now: float) -> Session:
        """This session accessed at `now`, as a new object: the store's copy-on-write touch.

        Shares `metadata`, `programs` and `affinity` with this one: the store never mutates a
        session it has published, so two published versions may share dicts that neither will
        change.
        """
        new: Session = _new(Session)
        new.id = self.id
        new.ttl = self.ttl
        new.created_at = self.created_at
        new.last_accessed = now
        new.metadata = self.metadata
        new.programs = self.programs
        new.last_worker_id = self.last_worker_id
        stats = new.stats = self.stats.copy()
        stats["accesses"] = stats.get("accesses", 0) + 1
        new.awaiting_input = self.awaiting_input
        new.last_heartbeat = self.last_heartbeat
        new.state = self.state
        new.affinity = self.affinity
        return new

    def expired(self, now: float) -> bool:
        return now - self.last_accessed > self.ttl

    def remaining(self, now: float) -> float:
        return max(0.0, self.ttl - (now - self.last_accessed))

    def put_program(self, name: str, program: Any) -> None:
        self.programs[name] = program

    def get_program(self, name: str, default: Any = None) -> Any:
        return self.programs.get(name, default)

    def delete_program(self, name: str) -> bool:
        return self.programs.pop(name, _MISSING) is not _MISSING

    def put_metadata(self, key: str, value: Any) -> None:
        self.metadata[key] = value

    def get_metadata(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def delete_metadata(self, key: str) -> bool:
        return self.metadata.pop(key, _MISSING) is not _MISSING
