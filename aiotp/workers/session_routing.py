"""Routing a pool's session requests: pins, affinity modes, and the state workers keep.

A session is *pinned* to one worker of a pool: the worker its requests go to, and the one that
keeps its `WorkerSession` state. The pin lives here (``pins``, on the runtime's loop) and is
mirrored in the session store (``Session.affinity[pool]``), where it survives this pool's
memory of it (a session imported from elsewhere, another runtime sharing the store).

Modes (``affinity=`` of the pool or of one call):
- ``"hint"``: the pinned worker if it has room, else the least-loaded free worker (else the
  pool's queue); the session is then pinned to whichever worker served it.
- ``"strict_queue"``: the pinned worker only; when it is busy the request waits in that
  worker's own queue (bounded by ``checkout_timeout`` and ``max_queue``).
- ``"strict_fail_fast"``: the pinned worker only; `WorkerBusy` at once when it is busy.

In both strict modes a pinned worker that died or was retired means the session's state is
gone: the session's next request (or the one in flight, or waiting) fails with
`SessionWorkerLost`, once, and the session is unpinned; the request after that places it anew.
A new (or unpinned) session is placed on the worker with the fewest pins, then the least
loaded; when that worker is busy but another has room, the free one is taken.

When the session store is full (``max_sessions``), a request keeps working without affinity;
the first time, the pool says so with a WARNING and a telemetry event
``("aiotp", "pool", "session", "unrouted")``.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from typing import TYPE_CHECKING, Any

from aiotp.runtime import telemetry
from aiotp.workers.dispatcher import WorkerSlot
from aiotp.workers.errors import SessionWorkerLost, WorkerBusy
from aiotp.workers.session_pins import PinWriter
from aiotp.workers.session_shared import SharedStoreRouting
from aiotp.workers.slot import SlotState

if TYPE_CHECKING:
    from aiotp.workers.pool import Pool

__all__ = ["SessionRouter"]

STRICT = ("strict_queue", "strict_fail_fast")


class SessionRouter(SharedStoreRouting):
    """The session side of one pool (see the module docstring); lives on the runtime loop."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.dispatcher = pool.dispatcher
        self.pins: dict[str, WorkerSlot] = {}
        # Which incarnation of a session id a pin belongs to (its ``created_at``): a session
        # deleted in another thread and created again must not inherit the old one's pin.
        self.born: dict[str, float] = {}
        # Sessions whose pinned worker died or retired, not yet told: session -> (worker id,
        # incarnation).
        self.lost: dict[str, tuple[str, float | None]] = {}
        self._warned_full = False
        self._unhook: Any = None
        # An async store (RedisSessionStore) is awaited on the request's path and its pins are
        # written by a PinWriter; the in-memory store keeps its plain calls (set in attach).
        self._aio = False
        self._pins: PinWriter | None = None
        self._guests: Any = None  # RayGuests, made when a Ray pool first meets a foreign pin
        self._unended: Any = None
        self._loop = pool.rt.loop
        self._loop_thread = threading.get_ident()
        self.dispatcher.on_gone = self._slot_gone

    # -- the store's side ---------------------------------------------------------------
    def attach(self) -> None:
        """Follow session removals in the runtime's store (their worker state is dropped)."""
        if self._unhook is None:
            store = self.pool.rt.sessions
            self._aio = inspect.iscoroutinefunction(store.get_or_create)
            if self._aio and self._pins is None:
                self._pins = PinWriter(store, self.pool.name, self.pool.log)
            self._unhook = store.on_remove(self._removed)
            on_ended = getattr(store, "on_ended", None)
            if self._aio and on_ended is not None:
                # A shared store runs removal hooks on the removing instance only: the ends
                # made by other instances come this way (see RedisSessionStore.on_ended).
                self._unended = on_ended(self.ended)

    def detach(self) -> None:
        unhook, self._unhook = self._unhook, None
        if unhook is not None:
            unhook()
        unended, self._unended = self._unended, None
        if unended is not None:
            unended()
        pins, self._pins = self._pins, None
        if pins is not None:
            pins.close()
        guests, self._guests = self._guests, None
        if guests is not None:
            guests.close()

    def _removed(self, session_id: str, _reason: str, session: Any) -> None:
        # Removal hooks run in whichever thread removed the session.
        born = getattr(session, "created_at", None)
        if threading.get_ident() == self._loop_thread:
            self.ended(session_id, born)
        elif not self._loop.is_closed():
            # RuntimeError: the loop closed meanwhile; the pool and its workers are gone too.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.ended, session_id, born)

    def ended(self, session_id: str, born: float | None = None) -> None:
        """The session (the incarnation `born` then, if given) is over: its pin goes and its
        worker forgets its state. A late report about an older incarnation changes nothing."""
        if born is not None and self.born.get(session_id, born) != born:
            return
        self.lost.pop(session_id, None)
        self.born.pop(session_id, None)
        if self._pins is not None:
            self._pins.forget(session_id)
        slot = self.pins.pop(session_id, None)
        if slot is not None:
            self._release(slot, session_id)

    def _release(self, slot: WorkerSlot, session_id: str) -> None:
        self.dispatcher.unpin(slot, session_id)
        if not slot.handle.closed.done():
            slot.handle.drop_session(session_id)

    def _slot_gone(self, slot: WorkerSlot) -> None:
        """`slot` died or is retiring: every session pinned to it has lost its state."""
        # The store keeps the dead worker's id as the session's pin until the session is told:
        # a pool started again (or another runtime) then finds it gone and says so.
        for session_id in list(slot.sessions):
            if self.pins.get(session_id) is slot:
                del self.pins[session_id]
                self.lost[session_id] = (slot.worker_id, self.born.pop(session_id, None))
            self.dispatcher.unpin(slot, session_id)

    def _mirror(self, store: Any, session_id: str, worker_id: str | None) -> None:
        if self._aio:
            if self._pins is not None:
                self._pins.put(session_id, worker_id)
            return
        try:
            store.pin(session_id, self.pool.name, worker_id)
        except Exception:  # the session ended meanwhile: nothing to record
            self.pool.log.debug("could not record the pin of session %r", session_id, exc_info=True)

    def _record(self, session_id: str) -> Any:
        """The session from the store (created on first use, touched), or None when the
        store is full: the request then runs without affinity."""
        from aiotp.session_store.errors import SessionQuotaExceeded

        try:
            return self.pool.rt.sessions.get_or_create(session_id)
        except SessionQuotaExceeded as exc:
            self._unrouted(session_id, exc)
            return None

    def _unrouted(self, session_id: str, exc: Exception) -> None:
        if not self._warned_full:
            self._warned_full = True
            self.pool.log.warning(
                "pool %r: the session store is full (%s); requests of new sessions run "
                "without affinity until it has room (said once)",
                self.pool.name,
                exc,
            )
        telemetry.execute(
            ("aiotp", "pool", "session", "unrouted"),
            {"count": 1},
            {"pool": self.pool.name, "session": session_id},
        )

    # -- the request's side ---------------------------------------------------------------
    async def checkout(
        self, session_id: str, mode: str, timeout: float | None, guests: bool = False
    ) -> tuple[WorkerSlot, list[Any]]:
        """A worker for one request of the session, and the session context to send it.

        With `guests` (plain requests of a Ray pool on a shared store), a session pinned to
        another runtime's worker is served there: the slot is then a `GuestSlot` (ray_guests.py),
        outside this pool's dispatcher."""
        d = self.dispatcher
        if self._unhook is None:
            self.attach()
        deadline: float | None = None
        if not self._aio:
            record = self._record(session_id)
        else:
            # The store's own deadline (its timeout=) may be longer than the request's: the
            # request's bounds every wait on its behalf, each wait given what is left of it.
            deadline = None if timeout is None else self._loop.time() + timeout
            record = await self._bounded(self._record_shared(session_id), deadline, session_id)
            timeout = None if deadline is None else max(0.0, deadline - self._loop.time())
        if record is None:
            return await d.checkout(timeout), [session_id, None]
        born = record.created_at
        if self.born.get(session_id, born) != born:
            self.ended(session_id)  # a new incarnation: the old one's end is still on its way
        strict = mode in STRICT
        slot = self.pins.get(session_id)
        if slot is not None and not d.accepting(slot):
            # Dead but not yet removed, or retiring (max_requests): it will never serve the
            # session again, so its state is as good as gone.
            self._slot_gone(slot)
            slot = None
        if slot is None and session_id in self.lost:
            worker, lost_born = self.lost.pop(session_id)
            self._mirror(self.pool.rt.sessions, session_id, None)  # told: once
            if strict and lost_born in (None, born):
                raise self.lost_error(session_id, worker)
        elif slot is None:
            guest = await self._guest(session_id, record, timeout) if guests else None
            if guest is not None:
                return guest, [session_id, self._settings(guest, session_id, record.metadata)]
            slot = self._adopt(session_id, record, strict)
        if slot is None:
            slot = await self._place(session_id, mode, timeout, born)
        elif d.has_room(slot):
            d.take(slot)
        elif strict:
            slot = await self._wait_for(slot, session_id, timeout, mode == "strict_queue")
        else:
            slot = await d.checkout(timeout)  # hint: whoever is free; pinned there if it serves
        if self._pins is not None and session_id in self._pins.running:
            # An async store: the pin is in it before the request runs, so that another
            # runtime sharing the store finds it. A caller that gives up gives the worker back.
            try:
                await self._bounded(self._pins.flush(session_id), deadline, session_id)
            except BaseException:
                d.checkin(slot)
                raise
        return slot, [session_id, self._settings(slot, session_id, record.metadata)]

    async def _wait_for(
        self, slot: WorkerSlot, session_id: str, timeout: float | None, wait: bool
    ) -> WorkerSlot:
        """The session's own worker, in its queue (strict modes); still the session's when
        handed over, or `SessionWorkerLost` (the session moved or ended meanwhile)."""
        d = self.dispatcher
        try:
            got = await d.checkout_on(slot, session_id, timeout, wait)
        except SessionWorkerLost:
            self.lost.pop(session_id, None)  # told now
            self._mirror(self.pool.rt.sessions, session_id, None)
            raise
        if self.pins.get(session_id) is not got:
            d.checkin(got)
            raise SessionWorkerLost(
                f"pool {self.pool.name!r}: session {session_id!r} left worker {got.worker_id} "
                "(it ended, or a call with another affinity moved it) while this request "
                "waited for that worker; its state there is gone",
                session_id,
                got.worker_id,
            )
        return got

    def _adopt(self, session_id: str, record: Any, strict: bool) -> WorkerSlot | None:
        """A pin the store knows and this router does not (an imported session, another
        runtime's pin): kept when its worker serves here, lost (strict) when it is gone."""
        affinity = getattr(record, "affinity", None) or {}
        worker = affinity.get(self.pool.name)
        if worker is None:
            return None
        slot = self.dispatcher.get(worker)  # worker ids are unique to this pool instance
        if slot is not None and self.dispatcher.accepting(slot):
            self.pins[session_id] = slot
            self.born[session_id] = record.created_at
            self.dispatcher.pin(slot, session_id)
            return slot
        self._mirror(self.pool.rt.sessions, session_id, None)
        if strict:
            raise self.lost_error(session_id, worker)
        return None

    async def _place(
        self, session_id: str, mode: str, timeout: float | None, born: float
    ) -> WorkerSlot:
        d = self.dispatcher
        target = d.place()
        if target is not None and d.has_room(target):
            d.take(target)
            slot = target
        else:
            free = d.checkout_nowait()
            if free is not None:
                slot = free
            elif mode == "strict_fail_fast" and target is not None:
                raise WorkerBusy(
                    f"pool {self.pool.name!r}: no worker is free for new session "
                    f"{session_id!r} (affinity strict_fail_fast)",
                    session_id,
                    target.worker_id,
                )
            elif mode == "strict_queue" and target is not None:
                self._pin(session_id, target, born)  # new sessions spread while they wait
                try:
                    return await self._wait_for(target, session_id, timeout, True)
                except SessionWorkerLost:
                    # A new session had no state to lose: any worker that frees up will do.
                    slot = await d.checkout(timeout)
            else:
                slot = await d.checkout(timeout)
        self._pin(session_id, slot, born)
        return slot

    def _pin(self, session_id: str, slot: WorkerSlot, born: float | None) -> None:
        old = self.pins.get(session_id)
        if old is slot:
            return
        if old is not None:
            self._release(old, session_id)  # its state moves with the pin: none of it
        self.pins[session_id] = slot
        if born is not None:
            self.born[session_id] = born
        self.dispatcher.pin(slot, session_id)
        self._mirror(self.pool.rt.sessions, session_id, slot.worker_id)

    def after(self, session_id: str, slot: WorkerSlot, mode: str) -> None:
        """A request of the session is over on `slot` (the worker is done with it). In hint
        mode the pin follows the worker that served it; a worker the session is not pinned
        to (it ended, moved, or the store was full) forgets whatever the request left."""
        pinned = self.pins.get(session_id)
        if pinned is slot:
            return
        if pinned is not None and mode == "hint" and slot.state is SlotState.SERVING:
            self._pin(session_id, slot, self.born.get(session_id))
        elif not slot.handle.closed.done():
            slot.handle.drop_session(session_id)
            slot.settings_sent.pop(session_id, None)

    def crashed(self, session_id: str, slot: WorkerSlot, exc: BaseException) -> BaseException:
        """What a strict-mode caller whose worker died mid-request gets: `SessionWorkerLost`."""
        self.lost.pop(session_id, None)  # told now
        if self.pins.get(session_id) is slot:
            del self.pins[session_id]
            self.born.pop(session_id, None)
            self.dispatcher.unpin(slot, session_id)
        self._mirror(self.pool.rt.sessions, session_id, None)
        lost = self.lost_error(session_id, slot.worker_id)
        lost.__cause__ = exc
        return lost

    def lost_error(self, session_id: str, worker: str) -> SessionWorkerLost:
        return SessionWorkerLost(
            f"pool {self.pool.name!r}: worker {worker}, which held session {session_id!r}, "
            "died or was recycled; its state for the session is gone (the next call places "
            "the session on a live worker)",
            session_id,
            worker,
        )

    def _settings(self, slot: WorkerSlot, session_id: str, metadata: dict[str, Any]) -> Any:
        """The session's settings for `slot`: sent when the worker does not hold them yet
        (or they changed), None otherwise (a process worker keeps the last ones)."""
        if getattr(slot.handle, "pid", None) is None:
            return metadata  # a thread worker: no wire to spare
        if slot.settings_sent.get(session_id) == metadata:
            return None
        return metadata  # recorded as held once a request carrying it succeeded (api.py)
