"""`SessionStore`: sessions with TTLs, a quota, affinity, a lifecycle, events and background
sweeps, on a `Table`.

::

    store = aiotp.SessionStore(ttl=3600, sweep_interval=60, max_sessions=10_000, shards=16)
    s = store.create("user-1", ttl=7200, metadata={"user_id": "u1"})
    store.get("user-1")              # touches; SessionNotFound if absent or expired
    s = store.update("user-1", lambda s: s.put_program("model", "v2"))  # -> the updated session
    store.transition("user-1", "running")   # along the transition table (lifecycle.py)
    store.pin("user-1", "ml", "ml-0.3")     # per-pool affinity
    async for ev in store.subscribe("user-1"): ...   # state, heartbeat, published, end (events.py)
    data = store.export("user-1"); other.import_session(data)  # one session over (portable.py)
    async with store:                # or store.start() / await store.stop(): background sweeps
        ...

Guarantees and defaults:
- Safe from many threads and from the event loop at once; every operation on one session is
  atomic (it runs under that session's shard lock), and no reader ever sees half of one.
- Copy-on-write: a stored session is never mutated; every change (`update`, a touch, affinity,
  heartbeat) builds a new `Session` under the shard lock and swaps it in. If ``fn`` raises,
  nothing changes. `update` returns the session as ``fn`` left it: a `delete` right after
  cannot turn a completed update into `SessionNotFound`.
- Every session handed out (`create`, `get`, `peek`, `update`, removal hooks) is the caller's
  own copy of one committed state: no later update reaches into it, and changing it changes
  nothing stored. The copy is one level deep (`Session.copy`): never mutate a value held in
  ``metadata`` or ``programs``, replace it.
- ``max_sessions=10_000``: `create` past it raises `SessionQuotaExceeded`; the check reserves a
  place under one small lock, so concurrent creators can never overshoot. A full store first
  reclaims expired sessions with one synchronous `sweep` (run outside that lock; concurrent
  creators that find it full share one sweep) and retries once: expired sessions never cost a
  create its place. The price: a create refused by a store full of *live* sessions costs one
  sweep (a few ms per 10,000 sessions).
- ``ttl=3600`` s since the last access (Snakepit's default); an expired session is absent at once
  for `get`/`update`/`touch`, and its place in the quota is freed by the next sweep or access.
- ``sweep_interval=60`` s between background sweeps. `sweep()` is synchronous;
  `sweep_async()` yields to the loop every ``sweep_chunk`` sessions (default 1,000) so a sweep of
  a million sessions never stalls the loop more than a few milliseconds at a time.
- ``heartbeat_timeout=None``: when set, a session marked ``awaiting_input`` with no `heartbeat`
  for that long is closed by the sweep with reason ``"gc"``.
- Every removal calls the hooks registered with `on_remove(fn)` as ``fn(session_id, reason,
  session)`` with reason ``"expired"``, ``"deleted"`` or ``"gc"``, outside any lock; a hook
  that raises is logged and skipped. The same removal sends each subscriber of the session one
  ``"end"`` event with that reason, queued under the shard lock where the session is removed.
- ``transitions`` (default `lifecycle.DEFAULT_TRANSITIONS`) and ``initial_state="pending"``:
  the states a session moves through, checked at construction (see `lifecycle`).
- ``clock=time.monotonic`` is injectable so tests never sleep for real TTLs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from aiotp.session_store.admission import Admission
from aiotp.session_store.errors import SessionExists, SessionNotFound, SessionQuotaExceeded
from aiotp.session_store.events import Events, _Registry
from aiotp.session_store.lifecycle import INPUT_REQUIRED, Lifecycle, check_table, check_worker_id
from aiotp.session_store.portable import Portable
from aiotp.session_store.session import Session
from aiotp.session_store.sweeping import Sweeping
from aiotp.session_store.table import Table

__all__ = ["RemovalHook", "SessionStore", "StoreStats"]

_log = logging.getLogger("aiotp.sessions")
RemovalHook = Callable[[str, str, Session], None]
_Change = Callable[[Session, float], Session]


@attrs.frozen
class StoreStats:
    current_sessions: int
    sessions_created: int
    sessions_deleted: int
    sessions_expired: int
    sessions_gc: int
    cleanup_runs: int
    max_sessions: int
    memory: int
    subscribers: int = 0  # open event subscriptions, all sessions together


def positive(name: str, value: Any, top: float = math.inf) -> float:
    """`value` as a float, or `ValueError` naming `name` (the session stores' settings)."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
        or value > top
    ):
        most = "" if top == math.inf else f" (at most {top})"
        raise ValueError(f"{name} must be a positive finite number{most}, got {value!r}")
    return float(value)


def check_settings(
    target: Any,
    *,
    ttl: Any,
    sweep_interval: Any,
    max_sessions: Any,
    heartbeat_timeout: Any,
    sweep_chunk: Any,
    clock: Any,
    transitions: Mapping[str, Iterable[str]] | None,
    initial_state: str,
    max_ttl: float = math.inf,
) -> None:
    """Check and set the settings every session store has (in memory and on Redis alike)."""
    target.ttl = positive("ttl", ttl, max_ttl)
    target.sweep_interval = positive("sweep_interval", sweep_interval)
    if not isinstance(max_sessions, int) or isinstance(max_sessions, bool) or max_sessions < 0:
        raise ValueError(f"max_sessions must be an int >= 0, got {max_sessions!r}")
    target.max_sessions = max_sessions
    target.heartbeat_timeout = (
        None if heartbeat_timeout is None else positive("heartbeat_timeout", heartbeat_timeout)
    )
    target.sweep_chunk = int(positive("sweep_chunk", sweep_chunk))
    target.clock = clock
    target.transitions, target.initial_state = check_table(transitions, initial_state)


def _check_id(session_id: Any) -> str:
    if not isinstance(session_id, str) or not session_id:
        raise TypeError(f"session id must be a non-empty string, got {session_id!r}")
    return session_id


class SessionStore(Admission, Lifecycle, Events, Portable, Sweeping):
    """See the module docstring."""

    # Set by check_settings (shared with RedisSessionStore).
    ttl: float
    sweep_interval: float
    max_sessions: int
    heartbeat_timeout: float | None
    sweep_chunk: int
    initial_state: str

    def __init__(
        self,
        ttl: float = 3600,
        sweep_interval: float = 60,
        max_sessions: int = 10_000,
        shards: int = 16,
        *,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_timeout: float | None = None,
        sweep_chunk: int = 1_000,
        transitions: Mapping[str, Iterable[str]] | None = None,
        initial_state: str = "pending",
    ) -> None:
        check_settings(
            self,
            ttl=ttl,
            sweep_interval=sweep_interval,
            max_sessions=max_sessions,
            heartbeat_timeout=heartbeat_timeout,
            sweep_chunk=sweep_chunk,
            clock=clock,
            transitions=transitions,
            initial_state=initial_state,
        )
        self._table = Table(shards)
        self._count = 0  # sessions held, expired or not: what the quota counts
        self._count_lock = threading.Lock()
        self._counters = {"created": 0, "deleted": 0, "expired": 0, "gc": 0, "cleanup_runs": 0}
        self._hooks: list[RemovalHook] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._subs = _Registry()
        self._reclaim_lock = threading.Lock()
        self._reclaims = 0  # sweeps run by creators that found the store full
        self._fruitless_at: float | None = None  # when the last of them freed nothing
        self._reclaimer: int | None = None  # the thread running a reclaim sweep now

    # -- creation ---------------------------------------------------------------------------
    def create(
        self, session_id: str, ttl: float | None = None, metadata: dict[str, Any] | None = None
    ) -> Session:
        _check_id(session_id)
        life = self.ttl if ttl is None else positive("ttl", ttl)
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {metadata!r}")
        now = self.clock()
        session = Session(session_id, life, time.time(), now, dict(metadata or {}))
        session.last_heartbeat = now
        session.state = self.initial_state
        session.awaiting_input = self.initial_state == INPUT_REQUIRED  # its heartbeat GC too
        return self._insert(session, now)

    def get_or_create(
        self, session_id: str, ttl: float | None = None, metadata: dict[str, Any] | None = None
    ) -> Session:
        try:
            return self.get(session_id)
        except SessionNotFound:
            pass
        try:
            return self.create(session_id, ttl, metadata)
        except SessionExists:  # another thread created it meanwhile
            return self.get(session_id)

    # -- access -----------------------------------------------------------------------------
    # Copy-on-write: every change below builds a new Session under the shard lock and stores it
    # in one dict assignment; a stored Session is never mutated. That keeps the Table's lock-free
    # read valid, and lets callers copy a stored session after the lock is released.
    def _live(self, session_id: str, change: _Change | None) -> Session:
        """The stored live session after `change` (run under its shard lock, if given).

        ``change(stored, now)`` returns the new Session to store; it must not mutate `stored`.
        An expired session is dropped and reported as `SessionNotFound`.
        """
        _check_id(session_id)
        t = self._table
        i = t._slot(session_id)
        now = self.clock()
        with t._locks[i]:
            shard = t._shards[i]
            session: Session | None = shard.get(session_id)
            dead = None
            if session is not None and session.expired(now):
                del shard[session_id]
                self._ended(session_id, "expired", now)
                dead, session = session, None
            elif session is not None and change is not None:
                session = shard[session_id] = change(session, now)
        if dead is not None:
            self._forget(session_id, "expired", dead)
        if session is None:
            raise SessionNotFound(f"no live session {session_id!r}")
        return session

    # The copies handed out below are made after the lock is released: the stored object they
    # copy is never mutated, so this is safe, and it keeps the lock short.
    def get(self, session_id: str) -> Session:
        """A copy of the live session (touched: its TTL restarts); `SessionNotFound` otherwise."""
        return self._live(session_id, Session._touched).copy()

    def peek(self, session_id: str) -> Session:
        """Like `get`, without touching it."""
        return self._live(session_id, None).copy()

    def touch(self, session_id: str) -> None:
        self._live(session_id, Session._touched)

    def update(self, session_id: str, fn: Callable[[Session], Any]) -> Session:
        """Run ``fn(session)`` atomically on a copy, which then replaces the stored session.

        ``fn`` may mutate the session it is given or return a `Session` to store instead; it runs
        under the shard lock, so keep it short and never call the store from it. Returns a copy
        of the session as stored right after ``fn`` (not looked up again: a concurrent `delete`
        cannot make a completed update raise). If ``fn`` raises, nothing changes.
        """

        def apply(stored: Session, now: float) -> Session:
            draft = stored.copy()
            draft.last_accessed = now
            draft.stats["accesses"] = draft.stats.get("accesses", 0) + 1
            result = fn(draft)
            if isinstance(result, Session) and result is not draft:
                draft = result.copy()  # fn may keep a reference to what it returned
            if draft.id != stored.id:  # it is filed under its id: a new one would be a lie
                raise ValueError(
                    f"session {session_id!r}: update() may not change its id (to {draft.id!r})"
                )
            if draft.state != stored.state:  # the table is the only way between states
                raise ValueError(
                    f"session {session_id!r}: update() may not change state "
                    f"({stored.state} -> {draft.state}); use transition()"
                )
            return draft

        return self._live(session_id, apply).copy()

    def set_affinity(self, session_id: str, worker_id: str | None) -> None:
        """Record the worker that served the session last (see `pin` for per-pool affinity)."""
        self._assign(session_id, last_worker_id=check_worker_id(worker_id))

    def heartbeat(self, session_id: str) -> None:
        """The session's client is alive: touches it, restarts the heartbeat GC's clock, and
        sends its subscribers a ``"heartbeat"`` event."""

        def beat(stored: Session, now: float) -> Session:
            new = stored._touched(now)
            new.last_heartbeat = now
            self._emit(session_id, "heartbeat", {}, now)
            return new

        self._live(session_id, beat)

    def set_awaiting_input(self, session_id: str, awaiting: bool = True) -> None:
        self._assign(session_id, awaiting_input=awaiting, last_heartbeat=self.clock())

    def _assign(self, session_id: str, **fields: Any) -> None:
        """Touch and set plain fields: an `update` that need not copy the dicts."""

        def assign(stored: Session, now: float) -> Session:
            new = stored._touched(now)  # shares the dicts, which no field set here holds
            for name, value in fields.items():
                setattr(new, name, value)
            return new

        self._live(session_id, assign)

    def delete(self, session_id: str) -> bool:
        """Remove a session; True if a live one was there."""
        _check_id(session_id)
        t = self._table
        i = t._slot(session_id)
        now = self.clock()
        with t._locks[i]:
            session = t._shards[i].pop(session_id, None)
            if session is not None:
                reason = "expired" if session.expired(now) else "deleted"
                self._ended(session_id, reason, now)
        if session is None:
            return False
        self._forget(session_id, reason, session)
        return reason == "deleted"

    def __contains__(self, session_id: str) -> bool:
        try:
            self.peek(session_id)
        except (SessionNotFound, TypeError):
            return False
        return True

    def __len__(self) -> int:
        return self._count

    def ids(self) -> list[str]:
        now = self.clock()
        return [k for k, s in self._table if not s.expired(now)]

    def count_by_state(self) -> dict[str, int]:
        """Live sessions per lifecycle state, every state of the table present (0 when none).

        A scan, shard by shard, of per-shard snapshots (O(sessions), ~1 ms per 10k, no lock
        held for long): for metrics and snapshots, not for a hot path."""
        now = self.clock()
        counts = dict.fromkeys(self.transitions, 0)
        for _, session in self._table:
            if not session.expired(now):
                counts[session.state] = counts.get(session.state, 0) + 1
        return counts

    # -- removal bookkeeping ----------------------------------------------------------------
    def _bump(self, counter: str, n: int = 1) -> None:
        with self._count_lock:
            self._counters[counter] += n

    def _forget(self, session_id: str, reason: str, session: Session) -> None:
        with self._count_lock:
            self._count -= 1
            self._counters[reason] += 1
        self._notify(session_id, reason, session)

    def on_remove(self, hook: RemovalHook) -> Callable[[], None]:
        """Call `hook(session_id, reason, session)` on every removal; returns an unsubscribe."""
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {hook!r}")
        self._hooks.append(hook)
        return lambda: self._hooks.remove(hook) if hook in self._hooks else None

    def _notify(self, session_id: str, reason: str, session: Session) -> None:
        hooks = list(self._hooks)
        if hooks:
            # A copy: a reader may still be copying the removed object outside the lock.
            session = session.copy()
        for hook in hooks:
            try:
                hook(session_id, reason, session)
            except Exception:
                _log.exception("session removal hook %r failed", hook)

    # -- introspection ------------------------------------------------------------------------
    def stats(self) -> StoreStats:
        with self._count_lock:
            c = dict(self._counters)
            current = self._count
        return StoreStats(
            current_sessions=current,
            sessions_created=c["created"],
            sessions_deleted=c["deleted"],
            sessions_expired=c["expired"],
            sessions_gc=c["gc"],
            cleanup_runs=c["cleanup_runs"],
            max_sessions=self.max_sessions,
            memory=self._table.info().memory,
            subscribers=self._subs.count(),
        )

    # -- persistence (see aiotp.session_store.snapshot) -------------------------------------
    def snapshot(self, path: str) -> int:
        from aiotp.session_store.snapshot import write_snapshot

        return write_snapshot(self, path)

    @classmethod
    def restore(cls, path: str, **options: Any) -> SessionStore:
        from aiotp.session_store.snapshot import read_snapshot

        return read_snapshot(cls, path, **options)

    def _adopt(self, session: Session) -> None:
        """Put a restored session in (quota-checked)."""
        with self._count_lock:
            if self._count >= self.max_sessions:
                raise SessionQuotaExceeded(f"restore exceeds max_sessions={self.max_sessions}")
            self._count += 1
        self._table.insert(session.id, session)
