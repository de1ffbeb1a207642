"""The worker actor: owns one worker (a child process or a thread pool) for its whole life.

It starts the worker (or adopts one the pool pre-started), links a heartbeat monitor to itself,
and puts the worker in the dispatcher. Whatever ends the actor ends the worker with it: a
graceful stop (``"normal"``/``"shutdown"``: in-flight requests finish within the pool's
``shutdown`` grace, then SIGTERM, then SIGKILL) or, on a crash, a heartbeat timeout or a
``"kill"``, an immediate kill from `on_exit` — the way an Erlang port dies with its owner.
When the worker dies on its own (its process exited, was SIGKILLed, or broke the protocol) the
actor crashes with `WorkerCrashed`, and the pool's supervisor starts a replacement.

It also samples its worker's memory when the pool has ``max_memory_mb`` (see memory.py): on its
own timer at the heartbeat's pace rather than in the heartbeat monitor, because recycling
needs the worker's slot, which this actor owns, and it must work with ``heartbeat=None`` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiotp.runtime import telemetry
from aiotp.runtime.actor import Actor
from aiotp.runtime.messages import is_normal_exit
from aiotp.workers.dispatcher import WorkerSlot
from aiotp.workers.errors import WorkerCrashed
from aiotp.workers.heartbeat import HeartbeatMonitor
from aiotp.workers.memory import exceeded, sample_interval
from aiotp.workers.worker_log import log_worker_death

if TYPE_CHECKING:
    import asyncio

    from aiotp.runtime.ref import ActorRef
    from aiotp.workers.pool import Pool

__all__ = ["FirstStart", "WorkerActor"]


class FirstStart:
    """True once: whether a worker's first start replaces a worker being recycled."""

    __slots__ = ("_recycling",)

    def __init__(self, recycling: bool) -> None:
        self._recycling = recycling

    def take(self) -> bool:
        recycling, self._recycling = self._recycling, False
        return recycling


class WorkerActor(Actor):
    async def init(self, pool: Pool, index: int, start: FirstStart | None = None) -> None:
        # A replacement's spec is reused when its supervisor restarts it: only its first
        # start is a recycling one; a restart must check that its index is not served.
        recycling = start.take() if start is not None else False
        self.pool = pool
        self.index = index
        self.handle: Any = None
        self.slot: WorkerSlot | None = None
        self.heartbeat: ActorRef | None = None
        if not recycling and pool.serving(index):
            # A restart of a worker whose replacement already took over (it died while being
            # recycled): the pool has its worker for this index; this one retires at once.
            self.stop("normal")
            return
        self.handle = pool.prestarted.pop(index, None) or await pool.start_handle(index)
        if pool.config.heartbeat is not None:
            self.heartbeat = await self.runtime.spawn(
                HeartbeatMonitor, self.handle, pool.config.heartbeat, pool.name, link=True
            )
        self.handle.closed.add_done_callback(self._worker_closed)
        pool.idempotent = self.handle.idempotent
        self.slot = WorkerSlot(self.handle, index, self.ref, pool.config.pipeline)
        if index in pool.started and not recycling:
            pool.dispatcher.restarts[index] += 1
        pool.started.add(index)
        pool.dispatcher.add(self.slot)
        if not recycling:
            pool.reconcile(index)  # a replacement may have joined while we started
        if pool.config.ttl is not None:
            self.send_after(pool.config.ttl, "recycle")
        if pool.config.max_memory_mb is not None:
            self.send_after(sample_interval(pool.config), "memory")
        telemetry.execute(
            ("aiotp", "pool", "worker", "spawned"),
            {"count": 1},
            {"pool": pool.name, "worker_id": self.handle.worker_id, "pid": self.handle.pid},
        )

    def _worker_closed(self, fut: asyncio.Future[Any]) -> None:
        if self.slot is not None:
            self.pool.dispatcher.remove(self.slot)  # no new request may pick a dead worker
        self.ref.send(("closed", fut.result() if not fut.cancelled() else "cancelled"))

    async def handle_info(self, msg: Any) -> None:
        if isinstance(msg, tuple) and msg[0] == "closed":
            if self.slot is not None and self.slot.draining:
                # Its replacement already serves: it was on its way out anyway (its requests
                # got WorkerCrashed from the handle). Restarting it would add a worker.
                self.stop("normal")
                return
            # Expected now and then (OOM, a segfaulting library): one WARNING line naming it
            # and how it ended, not a crash report (the stop below is not logged as one);
            # the supervisor replaces it.
            await log_worker_death(self.pool.name, self.index, self.handle, msg[1])
            self.stop(WorkerCrashed(f"worker {self.handle.worker_id} exited: {msg[1]}"))
        if msg == "recycle" and self.slot is not None:
            self.pool.recycle(self.slot, "ttl")
        elif msg == "memory" and self.slot is not None and not self.slot.draining:
            # Once past the limit it is being replaced: no more samples, no repeated warnings.
            if not exceeded(self.pool, self.slot):
                self.send_after(sample_interval(self.pool.config), "memory")
        elif (
            msg in ("retire", "drained")
            and self.slot is not None
            and self.slot.draining
            and self.slot.in_flight == self.slot.orphans
        ):
            # The replacement is serving and every request a caller still waits for is done
            # (requests nobody waits for any more do not hold a retiring worker).
            self.stop("normal")

    async def terminate(self, reason: Any) -> None:
        if self.slot is not None:
            self.pool.dispatcher.remove(self.slot)
        if self.handle is None or self.handle.closed.done():
            return
        if self.slot is not None and self.slot.overrun:
            self.handle.kill()  # it runs a tool nobody waits for and that would not give up
        elif is_normal_exit(reason):
            await self.handle.stop(self.pool.config.shutdown)

    def on_exit(self, reason: Any) -> None:
        if self.heartbeat is not None:
            # A "normal" exit does not travel over the link: end the monitor explicitly.
            self.runtime.exit(self.heartbeat, "shutdown")
        if self.slot is not None:
            self.pool.dispatcher.remove(self.slot)
        handle = self.handle
        if handle is None:
            return
        if not handle.closed.done():
            handle.kill()
        telemetry.execute(
            ("aiotp", "pool", "worker", "terminated"),
            {"count": 1, "requests": self.slot.requests if self.slot else 0},
            {
                "pool": self.pool.name,
                "worker_id": handle.worker_id,
                "reason": reason,
                "planned": is_normal_exit(reason),
            },
        )
