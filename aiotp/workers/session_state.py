"""State a worker keeps for one session: what makes strict affinity worth having.

A tool asks for it by declaring a keyword-only ``session`` parameter::

    class Planner(aiotp.Adapter):
        @aiotp.tool
        def plan(self, goal: str, *, session: aiotp.WorkerSession | None) -> list[str]:
            domain = session.state.setdefault("domain", build_domain())   # built once per session
            verbose = session.settings.get("verbose", 0)                   # the session's metadata
            ...

- ``state`` is a plain dict that lives in the worker the session is pinned to. It survives
  across that session's calls and is dropped when the session ends (expired, deleted, closed by
  the sweep), when the session is pinned to another worker, and with the worker itself. Use
  ``affinity="strict_queue"`` or ``"strict_fail_fast"`` when a tool relies on finding it: in
  ``"hint"`` mode a busy worker sends the request elsewhere, where ``state`` starts empty.
- ``settings`` is a read-only view of the session's ``metadata`` as the caller's store held it
  when the request was sent (per-session verbosity, strategy, limits).
- A thread-safe adapter may run two requests of one session at once: guard ``state`` with
  ``self.lock`` then.
"""

from __future__ import annotations

import _thread
from types import MappingProxyType

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in a worker process
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["SessionStates", "WorkerSession"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class WorkerSession:
    """One session as a worker sees it: its id, its in-worker state, its settings."""

    __slots__ = ("id", "settings", "state")

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.state: dict[str, Any] = {}
        self.settings: Mapping[str, Any] = _EMPTY

    def __repr__(self) -> str:
        return f"<WorkerSession {self.id!r} state keys={sorted(self.state)!r}>"


class SessionStates:
    """The sessions one worker holds state for (a worker process's request threads may enter
    them concurrently, hence the lock)."""

    def __init__(self) -> None:
        self._sessions: dict[str, WorkerSession] = {}
        self._lock = _thread.allocate_lock()  # threading.Lock, without importing threading

    def enter(self, session_id: str, settings: Mapping[str, Any] | None) -> WorkerSession:
        """The session's record, created on first use; ``settings`` None keeps the last ones."""
        with self._lock:
            record = self._sessions.get(session_id)
            if record is None:
                record = self._sessions[session_id] = WorkerSession(session_id)
            if settings is not None:
                record.settings = MappingProxyType(dict(settings))
            return record

    def drop(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions
