"""The shared-store side of a pool's session routing (`SessionRouter`'s async-store paths).

An async store (`RedisSessionStore`) may be shared by several runtimes (app instances): the pin
recorded there is the session's pin, our own pin writes must land before we trust what we read,
each read is bounded by the request's own deadline, and a pin to another runtime's Ray worker is
served on that worker (ray_guests.py). Kept apart from session_routing.py, which is about one
runtime's pins and affinity modes; this is a mixin of `SessionRouter` and uses its state.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiotp.runtime.errors import CallTimeout

if TYPE_CHECKING:
    from aiotp.workers.dispatcher import Dispatcher, WorkerSlot
    from aiotp.workers.pool import Pool
    from aiotp.workers.session_pins import PinWriter

__all__ = ["SharedStoreRouting"]


class SharedStoreRouting:
    """Reads of a shared store, pins made elsewhere, and guests (see the module docstring)."""

    if TYPE_CHECKING:
        pool: Pool
        dispatcher: Dispatcher
        pins: dict[str, WorkerSlot]
        born: dict[str, float]
        _aio: bool
        _pins: PinWriter | None
        _guests: Any

        def _unrouted(self, session_id: str, exc: Exception) -> None: ...
        def _release(self, slot: WorkerSlot, session_id: str) -> None: ...
        def _mirror(self, store: Any, session_id: str, worker_id: str | None) -> None: ...

    async def _record_async(self, session_id: str) -> Any:
        """`_record` for an async store. Its `SessionStoreUnavailable` reaches the caller:
        a session request cannot be routed without the store (sessionless ones still run)."""
        from aiotp.session_store.errors import SessionQuotaExceeded

        store: Any = self.pool.rt.sessions  # typed as the in-memory store
        try:
            return await store.get_or_create(session_id)
        except SessionQuotaExceeded as exc:
            self._unrouted(session_id, exc)
            return None

    async def _record_shared(self, session_id: str) -> Any:
        """The session from an async store, which other runtimes may share: the pin recorded
        there is the session's pin. Our own pin writes are flushed first (we read what we
        wrote); a pin of ours that the store no longer shows (another runtime moved or unpinned
        the session) is dropped with its worker state, and the recorded one is then adopted,
        placed anew or reported lost as for any pin this router did not make.

        A pin of ours whose write failed (`PinWriter.failed`) is not in the store: a store
        showing no pin then says nothing about other runtimes, so the pin is kept and written
        again; only another worker's pin recorded there drops it. Once our pin was written, a
        store showing none means someone unpinned the session after us."""
        pins = self._pins
        if pins is not None and session_id in pins.running:
            await pins.flush(session_id)
        puts = pins.puts if pins is not None else 0
        record = await self._record_async(session_id)
        slot = self.pins.get(session_id)
        # Only when no pin of ours was decided during the read: it may not show one yet.
        if record is not None and slot is not None and pins is not None and pins.puts == puts:
            recorded = (record.affinity or {}).get(self.pool.name)
            unwritten = pins.failed.get(session_id, False) == slot.worker_id
            same = self.born.get(session_id) == record.created_at
            if recorded == slot.worker_id:
                pins.forget(session_id)  # it landed after all (only its reply was lost)
            elif unwritten and recorded is None and same:
                pins.put(session_id, slot.worker_id)  # ours never landed: write it again
            elif same:
                del self.pins[session_id]
                self.born.pop(session_id, None)
                pins.forget(session_id)
                self._release(slot, session_id)
        return record

    async def _bounded(self, call: Any, deadline: float | None, session_id: str) -> Any:
        """``await call`` within the request's deadline (loop time; None: the store's own
        bounds it); `CallTimeout` when the request's deadline is what ran out."""
        if deadline is None:
            return await call
        bound = asyncio.timeout_at(deadline)
        try:
            async with bound:
                return await call
        except TimeoutError:
            if not bound.expired():
                raise
            raise CallTimeout(
                f"pool {self.pool.name!r}: the session store did not answer for session "
                f"{session_id!r} within the request's timeout"
            ) from None

    async def _guest(self, session_id: str, record: Any, timeout: float | None) -> Any:
        """The guest slot of another runtime's Ray worker the shared store pins the session to,
        or None (not a shared store, not a Ray pool, our own worker, or no such actor)."""
        if not self._aio or self.pool.config.profile != "ray":
            return None
        worker = (getattr(record, "affinity", None) or {}).get(self.pool.name)
        if worker is None or self.dispatcher.get(worker) is not None:
            return None
        if self._guests is None:
            from aiotp.workers.ray_guests import RayGuests

            self._guests = RayGuests(self.pool)
        guest = await self._guests.get(worker, session_id, timeout)
        return guest

    def guest_lost(self, session_id: str) -> None:
        """The other runtime's worker holding the session died under a request: the store
        forgets the pin (told once, as for our own workers), the next request places it."""
        self._mirror(self.pool.rt.sessions, session_id, None)
