"""Admission: putting a new session into a `SessionStore` (`create`, `import_session`).

One path for every way in, so that the quota, the replacement of a held session and the removal
notifications are right once:

- A held session of the same id that is expired (or live, when the caller asked to replace it)
  is replaced in place, under its shard lock: it already holds a quota place. Its removal is
  reported like any other (counters, hooks, its subscribers' ``"end"``), with reason
  ``"expired"`` or ``"deleted"``.
- Otherwise a quota place is reserved under the store's small count lock *before* the session is
  stored, so concurrent creators can never overshoot ``max_sessions``; a creator that then finds
  the id taken gives its place back.
- A full store reclaims before it refuses: expired sessions still hold places until a sweep or
  an access removes them, so the first creator to find the store full runs one synchronous
  `sweep` (outside the count lock, which the sweep takes once per chunk; removal hooks fire once
  per removed session) and retries its reservation once; only then is `SessionQuotaExceeded`
  raised. Creators that find it full at the same time share that one sweep, and a sweep that
  freed nothing is not run again for ``RECLAIM_PAUSE`` (1 s): a flood of creates on a store full
  of live sessions costs one sweep a second, not one each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiotp.session_store.errors import SessionExists, SessionQuotaExceeded
from aiotp.session_store.session import Session
from aiotp.session_store.table import Table

__all__ = ["RECLAIM_PAUSE", "Admission"]

RECLAIM_PAUSE = 1.0  # seconds between two reclaim sweeps when the last one freed nothing


class Admission:
    """The admission half of `SessionStore` (a mixin: the store owns the state named here)."""

    _table: Table
    _count: int
    _count_lock: threading.Lock
    _reclaim_lock: threading.Lock
    _reclaims: int
    _fruitless_at: float | None
    _reclaimer: int | None
    clock: Callable[[], float]
    max_sessions: int

    if TYPE_CHECKING:  # provided by the store and its other halves; no stub may shadow them

        def _bump(self, counter: str, n: int = 1) -> None: ...
        def _notify(self, session_id: str, reason: str, session: Session) -> None: ...
        def _ended(self, session_id: str, reason: str, now: float) -> None: ...
        def sweep(self) -> int: ...

    def _insert(self, session: Session, now: float, replace: bool = False) -> Session:
        """Store a new session (`create`, `import_session`); returns the caller's copy.

        A held session of the same id that is expired (or live, with `replace`) is replaced in
        place: it already holds a quota place. Otherwise a place is reserved first.
        """
        mine = session.copy()  # the caller's copy; `session` is never touched once stored
        sid = session.id
        old = self._put(session, now, replace, reserved=False)
        if old is None:
            self._reserve(sid)  # reserved before insertion: concurrent creators cannot overshoot
            try:
                old = self._put(session, now, replace, reserved=True)
            except BaseException:
                self._release()
                raise
            if old is not None:
                self._release()  # a held session appeared meanwhile; we took over its place
        self._bump("created")
        if old is not None:
            reason = "expired" if old.expired(now) else "deleted"
            self._bump(reason)
            self._notify(sid, reason, old)
        return mine

    def _put(self, session: Session, now: float, replace: bool, reserved: bool) -> Session | None:
        """Under the shard lock: store `session` over a held one, or in a free slot if a quota
        place is `reserved`; returns the one replaced. `SessionExists` over a live one, unless
        `replace`."""
        t = self._table
        sid = session.id
        i = t._slot(sid)
        with t._locks[i]:
            shard = t._shards[i]
            old = shard.get(sid)
            if old is not None:
                live = not old.expired(now)
                if live and not replace:
                    raise SessionExists(f"session {sid!r} already exists")
                self._ended(sid, "deleted" if live else "expired", now)
            if old is not None or reserved:
                shard[sid] = session
        return old

    def _reserve(self, session_id: str) -> None:
        if self._take_place():
            return
        # Full, but expired sessions may still hold places (no sweep has run since they
        # expired). Reclaim them with one sweep, run outside the count lock (the sweep takes it
        # once per chunk), and retry once. Creators that find the store full at the same time
        # share one sweep: whoever waited for another's sweep retries on its result.
        # A sweep that freed nothing is not repeated for RECLAIM_PAUSE seconds: a flood of
        # creates on a store full of live sessions must not cost a full sweep each.
        # A create made by a removal hook during that very sweep (same thread) does not sweep
        # again: it would wait for the lock its own thread holds.
        me = threading.get_ident()
        if self._reclaimer != me:
            seen = self._reclaims
            with self._reclaim_lock:
                now = self.clock()
                fruitless = self._fruitless_at
                # A clock that went backwards ends the pause too (an injected clock may).
                paused = fruitless is not None and 0 <= now - fruitless < RECLAIM_PAUSE
                if self._reclaims == seen and not paused:
                    self._reclaimer = me
                    try:
                        self._fruitless_at = None if self.sweep() else now
                    finally:
                        self._reclaimer = None
                    self._reclaims += 1
        if not self._take_place():
            raise SessionQuotaExceeded(
                f"cannot create session {session_id!r}: the store holds "
                f"{self._count} live sessions (max_sessions={self.max_sessions})"
            )

    def _take_place(self) -> bool:
        with self._count_lock:
            if self._count >= self.max_sessions:
                return False
            self._count += 1
            return True

    def _release(self) -> None:
        with self._count_lock:
            self._count -= 1
