"""Recording a pool's pins in an async session store (`RedisSessionStore`), in order.

The router decides pins synchronously on the runtime loop (`SessionRouter._pin`, also from a
request's completion callback), but an async store is written with a network call. `PinWriter`
takes each decision at once and writes it in the background: one task per session with writes
pending, so one session's pins reach the store in the order they were made (a later decision
replaces an earlier one not yet sent: only the last one matters), and sessions do not wait for
each other. `flush(session_id)` waits for that session's writes: the router calls it before a
request of a newly placed session is sent, so another runtime sharing the store finds the pin.

A write that fails (the session ended meanwhile, the server is down, a reply lost) is logged at
DEBUG and remembered in ``failed`` until a later write of that session succeeds: the router
must not read the store's missing pin as another runtime's decision (that would drop the
worker state of a session whose own pin merely failed to land), and it writes the pin again on
the session's next request (`SessionRouter._record_shared`). The in-memory store never comes
here: its pins are plain calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["PinWriter"]


class PinWriter:
    """Pins of one pool, written to an async store in order per session."""

    def __init__(self, store: Any, pool: str, log: Any) -> None:
        self.store = store
        self.pool = pool
        self.log = log
        self.pending: dict[str, str | None] = {}  # session -> the last pin not yet sent
        self.running: dict[str, asyncio.Task[None]] = {}
        # session -> the last pin whose write failed (none written since): not in the store
        self.failed: dict[str, str | None] = {}
        self.puts = 0  # pins decided so far: a read with no put during it saw all of ours

    def put(self, session_id: str, worker_id: str | None) -> None:
        self.puts += 1
        self.failed.pop(session_id, None)  # this decision replaces the failed one
        self.pending[session_id] = worker_id
        if session_id not in self.running:
            task = asyncio.get_running_loop().create_task(self._write(session_id))
            self.running[session_id] = task

    async def _write(self, session_id: str) -> None:
        try:
            while session_id in self.pending:
                worker_id = self.pending.pop(session_id)
                try:
                    await self.store.pin(session_id, self.pool, worker_id)
                except Exception:  # ended meanwhile, or the store is down: written again later
                    if session_id not in self.pending:  # a later decision replaces it anyway
                        self.failed[session_id] = worker_id
                    self.log.debug(
                        "could not record the pin of session %r", session_id, exc_info=True
                    )
                else:
                    self.failed.pop(session_id, None)
        finally:
            self.running.pop(session_id, None)

    async def flush(self, session_id: str) -> None:
        """Wait until the session's pins so far are in the store (or failed)."""
        task = self.running.get(session_id)
        if task is not None:
            # Shielded: a caller that gives up must not cancel a write others may wait for.
            await asyncio.shield(task)

    def forget(self, session_id: str) -> None:
        """The session ended: a failed pin of it is nothing to write again."""
        self.failed.pop(session_id, None)

    def close(self) -> None:
        """The pool stopped: drop what is not written yet (cancelled, nothing left pending)."""
        self.pending.clear()
        self.failed.clear()
        for task in self.running.values():
            task.cancel()
        self.running.clear()
