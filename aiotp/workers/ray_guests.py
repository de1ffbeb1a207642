"""Reaching another runtime's Ray worker: a session pinned there is served there.

Several app instances (processes, machines) each run a runtime with the same name, so their Ray
workers live in one Ray namespace, and share a session store (`RedisSessionStore`). A session
started on instance A is pinned to one of A's workers, and that worker keeps its
`WorkerSession` state. When instance B handles the session's next request, the store says
"pinned to ml-2.1.9f2c41", a worker B's own pool does not have: B attaches to that actor by name
and sends the request there, so the session keeps its state whichever instance serves it.

An attached ("guest") handle is B's view of A's worker:
- it never kills the actor and never restarts it: A's pool owns it (supervision, recycling,
  heartbeats); B only calls it;
- it learns of the actor's death as any handle does (a held-open watch call), and the session
  then gets `SessionWorkerLost` in strict modes, or is placed anew on B's workers with "hint";
- its requests are numbered apart from A's (a random 48-bit offset), so that a cancel sent by B
  can never name one of A's requests;
- B's dispatcher does not count it: A's worker serves both instances' requests, queued in the
  actor's own lanes.

A worker id that names no live actor (its pool stopped, its instance gone, or it died while
being attached) gives None: the caller treats the session's worker as lost. A worker that lives
but cannot be reached in time (a slow control server, the caller's deadline) is not lost: the
caller gets `CallTimeout` or `WorkerBusy` and the session keeps its pin and its state.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

from aiotp.runtime.cancel import retrieve
from aiotp.runtime.errors import CallTimeout
from aiotp.workers.errors import WorkerBusy, WorkerStartError
from aiotp.workers.ray_worker import RayWorker

if TYPE_CHECKING:
    from aiotp.workers.pool import Pool

__all__ = ["GuestSlot", "RayGuests"]


class GuestSlot:
    """What a request needs of a worker slot, for a guest handle (no dispatcher books)."""

    guest = True

    def __init__(self, handle: RayWorker) -> None:
        self.handle = handle
        self.worker_id = handle.worker_id
        self.settings_sent: dict[str, Any] = {}


class RayGuests:
    """The guest handles of one pool, by worker id (made on first use, dropped when closed)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._slots: dict[str, GuestSlot] = {}
        self._attaching: dict[str, asyncio.Future[GuestSlot | None]] = {}
        self._closed = False

    async def get(
        self, worker_id: str, session_id: str, timeout: float | None
    ) -> GuestSlot | None:
        """The guest slot of another runtime's worker `worker_id`, or None when no such actor
        lives in this runtime's namespace. Concurrent asks for one worker share one attach;
        `CallTimeout` past `timeout` (the attach goes on for the next request)."""
        slot = self._slots.get(worker_id)
        if slot is not None and not slot.handle.closed.done():
            return slot
        pending = self._attaching.get(worker_id)
        if pending is None:
            pending = asyncio.ensure_future(self._attach(worker_id, session_id))
            self._attaching[worker_id] = pending
            pending.add_done_callback(self._attached(worker_id))
        try:
            return await asyncio.wait_for(asyncio.shield(pending), timeout)
        except TimeoutError:
            raise CallTimeout(
                f"pool {self.pool.name!r}: session {session_id!r} is held by worker "
                f"{worker_id} of another runtime, which could not be reached within "
                f"{timeout} s"
            ) from None

    def _attached(self, worker_id: str) -> Any:
        def done(fut: asyncio.Future[GuestSlot | None]) -> None:
            self._attaching.pop(worker_id, None)
            retrieve(fut)  # a caller that gave up will not read it

        return done

    async def _attach(self, worker_id: str, session_id: str) -> GuestSlot | None:
        import ray
        from ray.exceptions import RayError

        namespace = self.pool.rt.name
        try:
            actor = await asyncio.to_thread(ray.get_actor, worker_id, namespace)
        except ValueError:  # no such named actor: it died or its pool stopped
            return None
        except Exception as exc:  # the cluster did not answer: not a verdict on the worker
            raise self._unreachable(worker_id, session_id, exc) from exc
        handle = RayWorker(
            actor,
            worker_id,
            self.pool.config.max_frame,
            owned=False,
            first_id=secrets.randbits(48) << 16,
        )
        try:
            await asyncio.wait_for(handle.start(attach=True), self.pool.config.start_timeout)
        except BaseException as exc:
            handle.kill()  # forgets it (a guest never kills)
            if isinstance(exc, WorkerStartError) and isinstance(exc.__context__, RayError):
                return None  # Ray says it died before it answered: lost
            if isinstance(exc, Exception):
                raise self._unreachable(worker_id, session_id, exc) from exc
            raise
        slot = GuestSlot(handle)
        if self._closed:
            handle.kill()
            return None
        self._slots[worker_id] = slot
        handle.closed.add_done_callback(lambda _f: self._forget(worker_id, slot))
        return slot

    def _unreachable(self, worker_id: str, session_id: str, exc: BaseException) -> WorkerBusy:
        return WorkerBusy(
            f"pool {self.pool.name!r}: session {session_id!r} is held by worker {worker_id} of "
            f"another runtime, which could not be reached ({type(exc).__name__}: {exc}); its "
            "state is kept there, try again",
            session_id,
            worker_id,
        )

    def _forget(self, worker_id: str, slot: GuestSlot) -> None:
        if self._slots.get(worker_id) is slot:
            del self._slots[worker_id]

    def close(self) -> None:
        """The pool stops: forget every guest handle (their actors are not ours). Attaches
        under way finish on their own (bounded by start_timeout) and are then forgotten."""
        for attaching in list(self._attaching.values()):
            attaching.add_done_callback(self._forget_attached)
        self._closed = True
        for slot in list(self._slots.values()):
            slot.handle.kill()
        self._slots.clear()

    @staticmethod
    def _forget_attached(fut: asyncio.Future[GuestSlot | None]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            slot = fut.result()
            if slot is not None:
                slot.handle.kill()
