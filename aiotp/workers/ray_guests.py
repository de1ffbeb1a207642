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

A worker id that names no live actor (its pool stopped, its instance gone) gives None: the
caller treats the session's worker as lost.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

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

    async def get(self, worker_id: str, timeout: float | None) -> GuestSlot | None:
        """The guest slot of another runtime's worker `worker_id`, or None when no such actor
        lives in this runtime's namespace. Concurrent asks for one worker share one attach."""
        slot = self._slots.get(worker_id)
        if slot is not None and not slot.handle.closed.done():
            return slot
        pending = self._attaching.get(worker_id)
        if pending is None:
            pending = asyncio.ensure_future(self._attach(worker_id))
            self._attaching[worker_id] = pending
            pending.add_done_callback(lambda _f: self._attaching.pop(worker_id, None))
        return await asyncio.wait_for(asyncio.shield(pending), timeout)

    async def _attach(self, worker_id: str) -> GuestSlot | None:
        import ray

        namespace = self.pool.rt.name
        try:
            actor = await asyncio.to_thread(ray.get_actor, worker_id, namespace)
        except ValueError:  # no such named actor: it died or its pool stopped
            return None
        handle = RayWorker(
            actor,
            worker_id,
            self.pool.config.max_frame,
            owned=False,
            first_id=secrets.randbits(48) << 16,
        )
        try:
            await asyncio.wait_for(handle.start(attach=True), self.pool.config.start_timeout)
        except Exception:
            handle.kill()  # forgets it (a guest never kills)
            return None
        slot = GuestSlot(handle)
        self._slots[worker_id] = slot
        handle.closed.add_done_callback(lambda _f: self._forget(worker_id, slot))
        return slot

    def _forget(self, worker_id: str, slot: GuestSlot) -> None:
        if self._slots.get(worker_id) is slot:
            del self._slots[worker_id]

    def close(self) -> None:
        """The pool stops: forget every guest handle (their actors are not ours)."""
        for attaching in list(self._attaching.values()):
            attaching.cancel()
        for slot in list(self._slots.values()):
            slot.handle.kill()
        self._slots.clear()
