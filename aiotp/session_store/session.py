"""`Session`: what a store keeps per session id.

A session carries metadata (who it belongs to), programs (named state a worker built for it: a
loaded model, a compiled query), the worker that served it last (affinity), usage stats, and its
timing: ``created_at`` (wall clock, for humans), ``last_accessed`` (the store's monotonic clock,
for the TTL), ``ttl`` in seconds. A session expires ``ttl`` seconds after it was last accessed;
an expired session counts as absent everywhere, even before a sweep removes it.

Mutate a session shared between threads through `SessionStore.update`, which runs your function
under the session's shard lock.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Session"]

_MISSING: Any = object()


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
