"""A pool's supervision subtree: the actors that own its workers, and how to start one.

::

    PoolSupervisor  (one_for_all)
     |- workers: DynamicSupervisor   one WorkerActor per worker (transient), each linked to
     |                               its HeartbeatMonitor
     `- manager: PoolManager         starts the workers in batches, recycles them

`pool_spec` puts a pool in any tree; `start_pool_supervisor` is what `rt.start_pool` does. The
state the pool shares with its callers (dispatcher, bookkeeping) is `aiotp.workers.pool.Pool`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiotp.runtime import reports
from aiotp.runtime.actor import Actor
from aiotp.runtime.errors import NameTaken
from aiotp.supervisors import (
    ChildSpec,
    DynamicSupervisor,
    StartChildError,
    Supervisor,
    SupervisorRef,
)
from aiotp.workers.config import PoolConfig
from aiotp.workers.dispatcher import WorkerSlot
from aiotp.workers.errors import PoolBusy
from aiotp.workers.pool import Pool

if TYPE_CHECKING:
    from aiotp.runtime.ref import ActorRef
    from aiotp.runtime.runtime import Runtime

__all__ = [
    "PoolManager",
    "PoolSupervisor",
    "pool_spec",
    "start_pool_supervisor",
    "worker_spec",
    "workers_name",
]

REPLACE_BACKOFF_FIRST = 1.0  # seconds before the first retry of a failed replacement
REPLACE_BACKOFF_MAX = 30.0


class PoolManager(Actor):
    """Starts the pool's workers in batches and replaces the ones being recycled."""

    async def init(self, pool: Pool) -> None:
        self.pool = pool
        pool.manager = self.ref
        workers = self.runtime.whereis(workers_name(pool.name))
        if not isinstance(workers, SupervisorRef):
            raise RuntimeError(f"pool {pool.name!r}: its workers' supervisor is not running")
        self.workers: SupervisorRef = workers
        pool.dispatcher.closed = False
        await pool.prestart()
        for index in range(pool.config.size):
            await self.workers.start_child(worker_spec(pool, index), timeout=None)

    async def handle_cast(self, msg: Any) -> None:
        if isinstance(msg, tuple) and msg[0] == "replace":
            await self._start_replacing(msg[1], 0.0)

    async def handle_info(self, msg: Any) -> None:
        if isinstance(msg, tuple) and msg[0] == "replace":
            # A retry after a failed replacement (see _replace).
            _, slot, delay = msg
            if _retired(slot):
                # It died (its restart is a fresh worker) or was retired meanwhile.
                slot.recycling = False
                self.pool.log.info(
                    "pool %r: %s went away; no more replacement attempts for it",
                    self.pool.name,
                    slot,
                )
                return
            await self._start_replacing(slot, delay)

    async def _start_replacing(self, slot: WorkerSlot, delay: float) -> None:
        # A background job: the manager's mailbox stays free while a worker starts.
        await self.runtime.jobs.spawn(
            self._replace(slot, delay), name=f"pool {self.pool.name!r} replacement"
        )

    def _backoff(self, delay: float) -> float:
        """The wait before the next try: 1 s, doubling, at most 30 s or ``ttl`` if shorter
        (an old worker should not outlive its ttl by much more than one ttl)."""
        ttl = self.pool.config.ttl
        cap = min(REPLACE_BACKOFF_MAX, ttl) if ttl is not None else REPLACE_BACKOFF_MAX
        return min(cap, delay * 2 if delay else REPLACE_BACKOFF_FIRST)

    async def _replace(self, slot: WorkerSlot, delay: float = 0.0) -> None:
        if not self.runtime.running:
            slot.recycling = False  # the runtime is stopping: the old worker stops with it
            return
        try:
            await self.workers.start_child(
                worker_spec(self.pool, slot.index, recycling=True), timeout=None
            )
        except Exception as exc:
            if not self.runtime.running or not self.ref.alive:
                slot.recycling = False
                return  # the pool or the runtime is going away: nothing to replace
            # A worker's start failure was logged with its traceback by the pool (once):
            # each retry here is one line.
            logged = isinstance(exc, StartChildError) and reports.reported(_root_cause(exc))
            tb = None if logged else exc
            if slot.overrun and slot.ref is not None:
                slot.recycling = False
                self.pool.log.warning(
                    "pool %r: could not start a replacement for %s: %r; killing it anyway",
                    self.pool.name,
                    slot,
                    exc,
                    exc_info=tb,
                )
                # It runs a tool nobody waits for and must go even without a stand-in; its
                # supervisor restarts it.
                self.runtime.exit(slot.ref, "kill")
                return
            delay = self._backoff(delay)
            self.pool.log.warning(
                "pool %r: could not start a replacement for %s: %r; retrying in %.1f s",
                self.pool.name,
                slot,
                exc,
                delay,
                exc_info=tb,
            )
            # The old worker keeps serving meanwhile, and slot.recycling stays set so that no
            # second replacement starts (max_requests asks again after every request). The
            # retry is a message to ourselves, not a sleep in this job, so that a shutdown
            # already in the mailbox wins and the delay holds no job open.
            self.send_after(delay, ("replace", slot, delay))
            return
        self.pool.dispatcher.drain(slot)  # the replacement serves now: no new work for it
        self.pool.emit_recycled(slot)
        if slot.ref is not None:
            slot.ref.send("retire")
        # The old worker may have died while its replacement started, and been restarted.
        self.pool.reconcile(slot.index)

    async def terminate(self, reason: Any) -> None:
        self.pool.dispatcher.close(PoolBusy(f"pool {self.pool.name!r} is stopping"))

    def on_exit(self, reason: Any) -> None:
        self.pool.kill_prestarted()
        if self.pool.manager is self.ref:
            self.pool.manager = None


class PoolSupervisor(Supervisor):
    """The root of one pool's subtree (one_for_all: workers' supervisor, then the manager)."""

    strategy = "one_for_all"

    async def init(self, config: PoolConfig) -> None:  # type: ignore[override]
        from aiotp.workers.api import registry

        pools = registry(self.runtime).pools
        if config.name in pools:
            raise NameTaken(f"a pool named {config.name!r} is already running")
        pool = Pool(self.runtime, config)
        pool.supervisor = self.ref
        pools[config.name] = pool
        self.pool = pool
        children = [
            ChildSpec(
                "workers",
                DynamicSupervisor,
                kwargs={"max_restarts": config.worker_restarts, "max_seconds": config.max_seconds},
                type="supervisor",
                name=workers_name(config.name),
            ),
            ChildSpec("manager", PoolManager, args=(pool,), shutdown=config.shutdown + 1.0),
        ]
        await super().init(children)

    async def terminate(self, reason: Any) -> None:
        await super().terminate(reason)  # workers first, then their template process
        pool: Pool | None = getattr(self, "pool", None)
        if pool is not None and pool.zygote is not None:
            zygote, pool.zygote = pool.zygote, None
            await zygote.aclose()

    def on_exit(self, reason: Any) -> None:
        from aiotp.workers.api import registry

        pool: Pool | None = getattr(self, "pool", None)
        if pool is None:
            return
        pools = registry(self.runtime).pools
        if pools.get(pool.name) is pool:
            del pools[pool.name]
        pool.dispatcher.close(PoolBusy(f"pool {pool.name!r} stopped"))
        pool.router.detach()
        pool.kill_prestarted()
        pool.close_zygote()


def _retired(slot: WorkerSlot) -> bool:
    """Whether `slot` no longer needs a replacement: its worker is gone or already leaving."""
    return slot.draining or slot.handle.closed.done() or slot.ref is None or not slot.ref.alive


def workers_name(pool: str) -> tuple[str, str, str]:
    return ("aiotp.pool", pool, "workers")


def worker_spec(pool: Pool, index: int, recycling: bool = False) -> ChildSpec:
    from aiotp.workers.worker import FirstStart, WorkerActor

    return ChildSpec(
        ("worker", index),
        WorkerActor,
        args=(pool, index, FirstStart(recycling)),
        # Recycled and stopped workers end "normal"; crashed or hung ones are restarted.
        restart="transient",
        # The worker's own terminate gives in-flight requests `shutdown` seconds, then kills.
        shutdown=pool.config.shutdown + 1.0,
    )


def pool_spec(name: str, adapter: Any, **options: Any) -> ChildSpec:
    """A pool as a child of any supervision tree (settings checked now, as `start_pool`)."""
    config = PoolConfig(name, adapter, **options)
    return ChildSpec(
        name, PoolSupervisor, args=(config,), type="supervisor", name=("aiotp.pool", name)
    )


async def start_pool_supervisor(rt: Runtime, name: str, adapter: Any, **options: Any) -> ActorRef:
    config = PoolConfig(name, adapter, **options)
    try:
        return await rt.spawn(PoolSupervisor, config, name=("aiotp.pool", name))
    except StartChildError as exc:
        raise _root_cause(exc) from exc


def _root_cause(exc: StartChildError) -> BaseException:
    """A worker that failed deep in the pool's tree is the error the caller wants to see."""
    cause: BaseException = exc
    while isinstance(cause, StartChildError):
        cause = cause.cause
    return cause
