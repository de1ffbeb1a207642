"""A named pool: a supervision subtree of workers plus the dispatcher that routes requests.

::

    await rt.start_pool("ml", MLAdapter, profile="process", size=4)
    y = await rt.execute("ml", "predict", {"x": 2.0}, timeout=5.0, session="user-1")
    await rt.stop_pool("ml")

`Pool` is the state one pool shares between its actors (the tree in pool_tree.py) and its
callers: the dispatcher, the template process, and the books of every request.

Guarantees:
- `start_pool` returns once every worker is ready, or raises `WorkerStartError` naming the worker
  that failed (with its stderr tail for process workers); nothing is left running then.
- Workers start ``startup_batch`` at a time, concurrently.
- A worker is recycled after ``max_requests`` requests (a bound: it never starts one more) or
  ``ttl`` seconds, gracefully: its replacement starts first (at 80% of ``max_requests``) and
  the old one stops once its in-flight requests are done, so capacity does not drop in steady
  state.
- A caller that leaves (timeout, cancellation) while its tool runs leaves the slot busy until
  the tool ends; past ``cancel_grace`` the worker is recycled (``overrun="recycle"``).
- A crashed, killed or hung worker is replaced by its supervisor; the requests it held fail with
  `WorkerCrashed`, nothing else does; the pool never holds two workers for one index.
  Worker restarts are bounded by ``max_restarts`` in ``max_seconds`` (default ``10 * size`` in
  5 s: pools expect workers to die now and then; a pool whose workers die faster than that
  escalates like any supervisor).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiotp.runtime import telemetry
from aiotp.workers.config import PoolConfig
from aiotp.workers.dispatcher import Dispatcher, PoolStats, WorkerSlot
from aiotp.workers.session_routing import SessionRouter
from aiotp.workers.slot import SlotState
from aiotp.workers.ticket import Ticket
from aiotp.workers.worker_log import StartFailures, pool_logger

if TYPE_CHECKING:
    from aiotp.runtime.ref import ActorRef
    from aiotp.runtime.runtime import Runtime

__all__ = ["Pool"]

# Slots whose worker still counts for its index, and may be recycled.
_RENEWABLE = (SlotState.SERVING, SlotState.WORN)



class Pool:
    """The state one pool shares between its actors and its callers (all on the runtime loop)."""

    def __init__(self, rt: Runtime, config: PoolConfig) -> None:
        self.rt = rt
        self.config = config
        self.name = config.name
        self.log = pool_logger(config.name)  # aiotp.pool.<name> (worker_log.py)
        self.start_failures = StartFailures(config.name)
        self.dispatcher = Dispatcher(
            config.name, config.max_queue, config.checkout_timeout, config.max_requests
        )
        self.dispatcher.on_wear = self.recycle
        self.router = SessionRouter(self)
        self.idempotent: frozenset[str] = frozenset()  # learnt from the first ready worker
        self.prestarted: dict[int, Any] = {}
        self.started: set[int] = set()
        self.supervisor: ActorRef | None = None
        self.manager: ActorRef | None = None
        self._generation = itertools.count()
        self.tag = secrets.token_hex(3)
        self.zygote: Any = None
        self._zygote_lock = asyncio.Lock()
        # The pool's first worker start (afresh, see _usable_zygote): None before it, True
        # while it runs, False once it is over.
        self._first_start: bool | None = None
        self._abandoned_before = _abandoned_threads()

    async def start_handle(self, index: int) -> Any:
        """Start one worker (process or thread pool) and return its handle once it is ready.

        A failure is logged once per kind (worker_log.StartFailures) and raised."""
        from aiotp.workers.errors import WorkerStartError

        try:
            handle = await self._start_handle(index)
        except WorkerStartError as exc:
            self.start_failures.failed(index, exc)
            raise
        self.start_failures.started()
        return handle

    async def _start_handle(self, index: int) -> Any:
        from aiotp.workers import proctitle, thread_worker

        cfg = self.config
        # Unique to this pool instance (its tag): a session pinned to a worker of another
        # runtime, or of this pool before it restarted, never matches one of ours by chance.
        worker_id = f"{self.name}-{index}.{next(self._generation)}.{self.tag}"
        if cfg.profile == "process":
            from aiotp.workers import process_start

            first = self._first_start is None
            if first:
                self._first_start = True
            try:
                return await process_start.start_process_worker(
                    cfg.adapter,
                    worker_id=worker_id,
                    threads_per_worker=cfg.threads_per_worker,
                    env=dict(cfg.env) if cfg.env else None,
                    start_timeout=cfg.start_timeout,
                    zygote=None if first else await self._usable_zygote(),
                    max_frame=cfg.max_frame,
                    title=proctitle.worker_title(self.name, index),
                )
            finally:
                if first:
                    self._first_start = False
        if cfg.profile == "ray":
            from aiotp.workers import ray_start  # imports Ray: only pools of that profile do

            return await ray_start.start_ray_worker(self, worker_id)
        return await thread_worker.start_thread_worker(
            cfg.adapter,
            worker_id=worker_id,
            threads_per_worker=cfg.threads_per_worker,
            start_timeout=cfg.start_timeout,
            jobs=self.rt.jobs,
        )

    async def prestart(self) -> None:
        """Start every worker, ``startup_batch`` at a time; on a failure stop them all and raise."""
        cfg = self.config
        indices = list(range(cfg.size))

        async def start(index: int) -> None:
            # Kept as soon as it is ready: a start that succeeds while a sibling fails or the
            # whole prestart is cancelled is still found (and killed) by kill_prestarted.
            self.prestarted[index] = await self.start_handle(index)

        try:
            for at in range(0, len(indices), cfg.startup_batch):
                batch = indices[at : at + cfg.startup_batch]
                results = await asyncio.gather(*(start(i) for i in batch), return_exceptions=True)
                failure = next((r for r in results if isinstance(r, BaseException)), None)
                if failure is not None:
                    raise failure
        except BaseException:
            self.kill_prestarted()
            raise

    async def _usable_zygote(self) -> Any:
        """The pool's template process, (re)started when missing or dead; None without
        ``preload`` or when the adapter cannot be preloaded (plain starts then report why).

        The pool's first worker starts afresh without asking (`start_handle`): the template
        starts only once a second start is asked for (the rest of the first batch, or a later
        restart). So a pool of one never runs an idle template, and its worker does not share
        two cores with the template's own interpreter start. With more workers the template
        starts next to the first one, and the other starts of the first batch wait for it."""
        from aiotp.workers import proctitle
        from aiotp.workers.adapter import adapter_path
        from aiotp.workers.zygote_client import Zygote

        cfg = self.config
        if not cfg.preload:
            return None
        async with self._zygote_lock:
            if self.zygote is not None and self.zygote.usable:
                return self.zygote
            try:
                path = cfg.adapter if isinstance(cfg.adapter, str) else adapter_path(cfg.adapter)
            except ValueError:
                return None
            old, self.zygote = self.zygote, None
            if old is not None:
                await old.aclose()  # reap the dead one
            env = dict(cfg.env) if cfg.env else None
            # While the pool's first worker still starts afresh, no other start goes afresh
            # (a third interpreter at once on a small machine): they wait for the template.
            self.zygote = await Zygote.start(
                path,
                env,
                cfg.start_timeout,
                direct_first=not self._first_start,
                title=proctitle.template_title(self.name),
            )
            return self.zygote

    def close_zygote(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    def kill_prestarted(self) -> None:
        for handle in self.prestarted.values():
            handle.kill()
        self.prestarted.clear()

    # -- request bookkeeping (called by execute/stream on the hot path) -------------------
    def release(
        self,
        slot: WorkerSlot,
        ticket: Ticket,
        outcome: str,
        then: Callable[[], None] | None = None,
    ) -> None:
        """The caller is done with `slot` (``outcome``: "ok", "error" or "cancelled"). If the
        worker still runs the request (the caller timed out or was cancelled), the slot stays
        busy until the ticket ends; `then` runs once the worker is really done with it."""
        if not ticket.running:
            self.finished(slot, outcome)
            if then is not None:
                then()
            return
        slot.orphans += 1
        timer = self.rt.loop.call_later(self.config.cancel_grace, self._overran, slot, ticket)

        def ended() -> None:
            timer.cancel()
            slot.orphans -= 1
            self.finished(slot, outcome)
            if then is not None:
                then()

        ticket.when_ended(ended)

    def _overran(self, slot: WorkerSlot, ticket: Ticket) -> None:
        """A tool still runs `cancel_grace` s after its caller left (see PoolConfig)."""
        if not ticket.running or slot.handle.closed.done():
            return
        telemetry.execute(
            ("aiotp", "pool", "worker", "overrun"),
            {"grace": self.config.cancel_grace},
            {"pool": self.name, "worker_id": slot.worker_id, "policy": self.config.overrun},
        )
        if self.config.overrun != "recycle" or slot.overrun:
            return
        self.log.warning(
            "pool %r: worker %s still runs a request %s s after its caller left; recycling it",
            self.name,
            slot.worker_id,
            self.config.cancel_grace,
        )
        slot.overrun = True
        if slot.draining and slot.ref is not None:
            slot.ref.send("drained")  # already being replaced: retire it now
        else:
            self.recycle(slot, "overrun")

    def serving(self, index: int) -> list[WorkerSlot]:
        """The live workers taking new work for `index` (one, outside of races we repair)."""
        return [
            s
            for s in self.dispatcher.slots
            if s.index == index and s.state in _RENEWABLE and not s.handle.closed.done()
        ]

    def reconcile(self, index: int) -> None:
        """One worker per index: when a restart and a replacement raced (the old worker died
        while being recycled), the newest stays and the others retire once drained."""
        serving = self.serving(index)
        if len(serving) < 2:
            return
        keep = max(serving, key=lambda s: s.started_at)
        for slot in serving:
            if slot is not keep:
                self.dispatcher.drain(slot)
                if slot.ref is not None:
                    slot.ref.send("retire")

    def finished(self, slot: WorkerSlot, outcome: str) -> None:
        d = self.dispatcher
        slot.requests += 1
        d.requests += 1
        if outcome == "error":
            slot.errors += 1
            d.errors += 1
        elif outcome == "cancelled":
            d.cancelled += 1
        d.checkin(slot)

    def recycle(self, slot: WorkerSlot, cause: str = "max_requests") -> None:
        """Start a replacement, then retire `slot` once it is idle (capacity never drops).
        `cause` (max_requests, ttl, memory, overrun) goes into the "recycled" event."""
        if slot.recycling or slot.state not in _RENEWABLE:
            return
        if self.manager is None or not self.manager.alive:
            return
        slot.recycling = True  # keeps serving until its replacement is ready
        slot.recycle_cause = cause
        self.manager.cast_nowait(("replace", slot))

    def stats(self) -> PoolStats:
        return self.dispatcher.stats(
            self.config.profile,
            self.config.size,
            _abandoned_threads() - self._abandoned_before,
            self.config.affinity,
        )

    def emit_recycled(self, slot: WorkerSlot) -> None:
        self.dispatcher.recycled += 1
        telemetry.execute(
            ("aiotp", "pool", "worker", "recycled"),
            {"requests": slot.requests},
            {"pool": self.name, "worker_id": slot.worker_id, "cause": slot.recycle_cause},
        )


def _abandoned_threads() -> int:
    from aiotp.workers import thread_worker

    counter = getattr(thread_worker, "abandoned_threads", None)
    return int(counter()) if callable(counter) else 0
