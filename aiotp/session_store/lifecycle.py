"""Session lifecycle: a declared table of states, and per-pool worker affinity.

Without a table, "is this job still running?" ends up as a handful of booleans that disagree
after a race. Here a session's ``state`` moves only along the edges of its store's transition
table, one atomic step at a time::

    store = aiotp.SessionStore()
    store.create("job-1")                         # state "pending"
    store.transition("job-1", "running")
    store.transition("job-1", "input_required")   # awaiting_input=True, heartbeat clock starts
    store.transition("job-1", "running")          # awaiting_input=False
    store.transition("job-1", "done")             # terminal: no edge leaves it
    store.transition("job-1", "running")          # IllegalTransition: done -> running

The default table (`DEFAULT_TRANSITIONS`)::

    pending        -> running | aborted | failed     (a job may be abandoned before it starts)
    running        -> input_required | done | failed | aborted
    input_required -> running | done | failed | aborted
    done, failed, aborted: terminal

Guarantees:
- `transition` is atomic: it checks the edge and stores the new state under the session's shard
  lock, copy-on-write, so of N threads racing ``pending -> running`` exactly one wins and the
  others get `IllegalTransition` (``running -> running is not allowed``). It touches the session
  and emits one ``"state"`` event (`aiotp.session_store.events`).
- Entering ``"input_required"`` sets ``awaiting_input=True`` and ``last_heartbeat=now``, so the
  store's heartbeat GC (``heartbeat_timeout``) closes a session nobody answers; leaving it sets
  ``awaiting_input=False``. (`set_awaiting_input` still sets the flag alone, without a state.)
- A terminal state ends nothing by itself: the session lives on until its TTL or a `delete`.
- `update` may not change ``state``: the table is the only way in or out of a state.
- A table replaces the default per store: ``SessionStore(transitions={...},
  initial_state="queued")``. It is checked at construction: every target must be a state of the
  table (a terminal state maps to an empty set) and the initial state must be in it, else
  `ValueError` naming the culprit.

Affinity: ``Session.affinity`` maps a pool name to the worker a session is pinned to there, so
one session can keep its model warm in one pool and its tokenizer in another. `pin` sets (or
with ``None``, removes) one entry and records the worker as ``last_worker_id``; `set_affinity`
still sets ``last_worker_id`` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from aiotp.session_store.errors import IllegalTransition
from aiotp.session_store.session import Session

__all__ = ["DEFAULT_TRANSITIONS", "INPUT_REQUIRED", "Lifecycle", "check_table", "check_worker_id"]

INPUT_REQUIRED = "input_required"
_Change = Callable[[Session, float], Session]

DEFAULT_TRANSITIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "pending": frozenset({"running", "aborted", "failed"}),
        "running": frozenset({INPUT_REQUIRED, "done", "failed", "aborted"}),
        INPUT_REQUIRED: frozenset({"running", "done", "failed", "aborted"}),
        "done": frozenset(),
        "failed": frozenset(),
        "aborted": frozenset(),
    }
)


def check_table(
    transitions: Mapping[str, Iterable[str]] | None, initial_state: Any
) -> tuple[Mapping[str, frozenset[str]], str]:
    """The table as a read-only mapping of frozensets, and the initial state; `ValueError`
    naming whatever is wrong."""
    if transitions is None:
        table = DEFAULT_TRANSITIONS
    else:
        if not isinstance(transitions, Mapping) or not transitions:
            raise ValueError(f"transitions must be a non-empty dict, got {transitions!r}")
        built: dict[str, frozenset[str]] = {}
        for state, targets in transitions.items():
            if not isinstance(state, str) or not state:
                raise ValueError(f"transition table: state {state!r} is not a non-empty string")
            if isinstance(targets, str) or not isinstance(targets, Iterable):
                raise ValueError(
                    f"transition table: the targets of {state!r} must be a set of states, "
                    f"got {targets!r}"
                )
            items = frozenset(targets) if all(_hashable(t) for t in targets) else None
            if items is None or not all(isinstance(t, str) and t for t in items):
                raise ValueError(
                    f"transition table: the targets of {state!r} must be non-empty strings, "
                    f"got {targets!r}"
                )
            built[state] = items
        for state, targets in built.items():
            unknown = sorted(repr(t) for t in targets if t not in built)
            if unknown:
                raise ValueError(
                    f"transition table: {state!r} -> {', '.join(unknown)}: not a state of the "
                    "table (list a terminal state with an empty set of targets)"
                )
        table = MappingProxyType(built)
    if not isinstance(initial_state, str) or initial_state not in table:
        raise ValueError(
            f"initial_state {initial_state!r} is not a state of the transition table "
            f"({', '.join(sorted(table))})"
        )
    return table, initial_state


def check_worker_id(worker_id: Any) -> str | None:
    if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
        raise TypeError(f"worker id must be a non-empty string or None, got {worker_id!r}")
    return worker_id


class Lifecycle:
    """The lifecycle half of `SessionStore` (a mixin: the store owns `_live` and the table)."""

    transitions: Mapping[str, frozenset[str]]
    initial_state: str

    if TYPE_CHECKING:  # provided by the store and its other halves; no stub may shadow them

        def _live(self, session_id: str, change: _Change | None) -> Session: ...
        def _emit(self, session_id: str, kind: str, data: Any, now: float) -> None: ...

    def transition(self, session_id: str, new_state: str) -> Session:
        """Move the session to `new_state` along the table; returns a copy as stored.

        `IllegalTransition` if the table has no such edge (or no such state); `SessionNotFound`
        if the session is absent or expired. Nothing changes on either error.
        """
        table = self.transitions

        def move(stored: Session, now: float) -> Session:
            old = stored.state
            allowed = table.get(old, frozenset())
            if not isinstance(new_state, str) or new_state not in allowed:
                raise IllegalTransition(session_id, old, str(new_state), allowed)
            new = stored._touched(now)  # shares dicts: nothing set here holds one
            new.state = new_state
            if new_state == INPUT_REQUIRED:
                new.awaiting_input = True
                new.last_heartbeat = now  # the heartbeat GC counts from here
            elif old == INPUT_REQUIRED:
                new.awaiting_input = False
            # Under the shard lock, with the change: subscribers see states in commit order.
            self._emit(session_id, "state", {"from": old, "to": new_state}, now)
            return new

        return self._live(session_id, move).copy()

    def pin(self, session_id: str, pool: str, worker_id: str | None) -> None:
        """Pin the session to `worker_id` in `pool` (``None`` unpins it there); touches it.

        A worker id also becomes ``last_worker_id``. `TypeError` for a pool name or worker id
        that is not a non-empty string.
        """
        if not isinstance(pool, str) or not pool:
            raise TypeError(f"pool name must be a non-empty string, got {pool!r}")
        check_worker_id(worker_id)

        def assign(stored: Session, now: float) -> Session:
            new = stored._touched(now)
            affinity = dict(stored.affinity)  # a new dict: the stored one is shared, read-only
            if worker_id is None:
                affinity.pop(pool, None)
            else:
                affinity[pool] = worker_id
                new.last_worker_id = worker_id
            new.affinity = affinity
            return new

        self._live(session_id, assign)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
