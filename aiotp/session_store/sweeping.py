"""Sweeping a `SessionStore`: removing expired and heartbeat-abandoned sessions, shard by shard.

Kept apart from the store's single-session operations (store.py). A sweep takes each shard's
lock only while it removes one chunk of that shard's keys (``sweep_chunk``, default 1,000), and
`sweep_async` yields to the loop between chunks, so a sweep of a million sessions never holds a
lock, or the loop, for more than a few milliseconds. Bookkeeping (the quota's count, the
counters) happens once per chunk; removal hooks run outside every lock. Each removed session's
subscribers get their ``"end"`` event under the shard lock, where the session is removed, so it
fires once even when an access finds the same session expired at the same time.

`start`/`stop` run the sweeps as a task for a store used on its own; the runtime's default store
is swept by a runtime job instead (`aiotp.session_store.runtime_store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Self

from aiotp.session_store.session import Session
from aiotp.session_store.table import Table

__all__ = ["Sweeping"]

_log = logging.getLogger("aiotp.sessions")


class Sweeping:
    """The sweeping half of `SessionStore` (a mixin: the store owns the state named here)."""

    _table: Table
    _count: int
    _count_lock: threading.Lock
    _counters: dict[str, int]
    _hooks: list[Callable[[str, str, Session], None]]
    _sweeper: asyncio.Task[None] | None
    clock: Callable[[], float]
    heartbeat_timeout: float | None
    sweep_chunk: int
    sweep_interval: float

    def _notify(self, session_id: str, reason: str, session: Session) -> None:
        raise NotImplementedError

    def _bump(self, counter: str, n: int = 1) -> None:
        raise NotImplementedError

    def _ended(self, session_id: str, reason: str, now: float) -> None:
        raise NotImplementedError

    def _doomed(self, session: Session, now: float) -> str | None:
        if session.expired(now):
            return "expired"
        hb = self.heartbeat_timeout
        if hb is not None and session.awaiting_input and now - session.last_heartbeat > hb:
            return "gc"
        return None

    def _sweep_keys(self, index: int, keys: list[str], now: float) -> int:
        t = self._table
        removed: list[tuple[str, str, Session]] = []
        with t._locks[index]:
            shard = t._shards[index]
            for key in keys:
                session = shard.get(key)
                if session is None:
                    continue
                reason = self._doomed(session, now)
                if reason is not None:
                    del shard[key]
                    self._ended(key, reason, now)
                    removed.append((key, reason, session))
        if removed:
            # One bookkeeping step per chunk, not per session: this is the sweep's hot loop.
            with self._count_lock:
                self._count -= len(removed)
                for _, reason, _ in removed:
                    self._counters[reason] += 1
            if self._hooks:
                for key, reason, session in removed:
                    self._notify(key, reason, session)
        return len(removed)

    def _shard_keys(self, index: int) -> list[str]:
        t = self._table
        with t._locks[index]:
            return list(t._shards[index])

    def sweep(self) -> int:
        """Remove expired (and heartbeat-abandoned) sessions now; returns how many."""
        now = self.clock()
        removed = sum(
            self._sweep_keys(i, self._shard_keys(i), now) for i in range(self._table.shard_count)
        )
        self._bump("cleanup_runs")
        return removed

    async def sweep_async(self) -> int:
        """`sweep`, yielding to the loop every `sweep_chunk` sessions."""
        now = self.clock()
        removed = 0
        chunk = self.sweep_chunk
        for i in range(self._table.shard_count):
            keys = self._shard_keys(i)
            for at in range(0, len(keys), chunk):
                removed += self._sweep_keys(i, keys[at : at + chunk], now)
                await asyncio.sleep(0)
        self._bump("cleanup_runs")
        return removed

    def start(self) -> None:
        """Start background sweeps every `sweep_interval` s (needs a running loop)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self.sweep_forever())

    async def stop(self) -> None:
        """Stop background sweeps and wait for the sweeper to finish (no task left behind)."""
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def sweep_forever(
        self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        """Sweep every `sweep_interval` s until cancelled; one failed sweep (a hook that
        raised) is logged and does not end the loop. Run it as a task (`start`) or as a job
        of the runtime (the runtime's default store). `sleep` waits between sweeps: the
        runtime passes its clock's, so that sweeps follow a virtual clock in tests."""
        while True:
            await sleep(self.sweep_interval)
            try:
                await self.sweep_async()
            except Exception:
                _log.exception("session sweep failed")
