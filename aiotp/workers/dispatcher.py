"""The dispatcher: which worker serves a request, and who waits when none is free.

Why not an actor: a pool request goes caller -> worker directly. The dispatcher's state lives on
the runtime's loop and is touched only from that loop, so a checkout is a plain function call
(a few hundred nanoseconds) rather than a message round trip to a pool process (several
microseconds), and the caller awaits its worker's reply itself. The pool's actors (manager,
workers, heartbeats) own the lifecycle of this state; the hot path never goes through them.

Rules:
- A request goes to the least-loaded live worker with free capacity. With ``session=``, the
  session's last worker is preferred while it is alive and has room (affinity is a preference,
  not a wait: a busy or dead worker never holds a session's request hostage).
- When every worker is busy the caller waits in one FIFO queue, bounded by ``max_queue``
  (`PoolBusy` at once past it) and by ``checkout_timeout`` (`CheckoutTimeout`). A freed worker is
  handed straight to the first waiter, so nobody is overtaken by a newcomer.
- A worker being recycled (``draining``) takes no new work; its replacement starts first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import Any

import attrs

from aiotp.runtime import telemetry
from aiotp.workers.errors import CheckoutTimeout, PoolBusy

__all__ = ["Dispatcher", "PoolStats", "WorkerSlot", "WorkerStats"]


class WorkerSlot:
    """One live worker as the dispatcher sees it."""

    __slots__ = (
        "capacity",
        "draining",
        "errors",
        "handle",
        "in_flight",
        "index",
        "orphans",
        "overrun",
        "recycling",
        "ref",
        "requests",
        "started_at",
        "worker_id",
    )

    def __init__(self, handle: Any, index: int, ref: Any = None, pipeline: int = 1) -> None:
        self.handle = handle
        self.worker_id: str = handle.worker_id
        self.index = index
        self.ref = ref
        # Requests it may hold: what it runs at once, times the pipeline depth (process only).
        depth = pipeline if getattr(handle, "pid", None) is not None else 1
        self.capacity: int = max(1, int(handle.capacity)) * depth
        self.in_flight = 0
        self.requests = 0
        self.errors = 0
        self.draining = False  # takes no new work; stops when idle
        self.recycling = False  # a replacement is being started; still serving meanwhile
        # Requests whose caller left while the worker still runs them (counted in in_flight).
        self.orphans = 0
        self.overrun = False  # a tool overran its caller past cancel_grace: retire by kill
        self.started_at = time.monotonic()

    def __repr__(self) -> str:
        state = "draining" if self.draining else "live"
        return f"<WorkerSlot {self.worker_id} {state} {self.in_flight}/{self.capacity}>"


@attrs.frozen
class WorkerStats:
    worker_id: str
    index: int
    pid: int | None
    busy: int
    capacity: int
    requests: int
    errors: int
    restarts: int
    draining: bool


@attrs.frozen
class PoolStats:
    """`rt.pool_stats(name)`: a snapshot, safe to keep."""

    name: str
    profile: str
    size: int
    live: int
    busy: int
    queued: int
    capacity: int
    requests: int
    errors: int
    restarts: int
    recycled: int
    abandoned_threads: int
    workers: tuple[WorkerStats, ...]


class Dispatcher:
    def __init__(self, name: str, max_queue: int, checkout_timeout: float) -> None:
        self.name = name
        self.max_queue = max_queue
        self.checkout_timeout = checkout_timeout
        self.slots: list[WorkerSlot] = []
        self._by_id: dict[str, WorkerSlot] = {}
        self._waiters: collections.deque[asyncio.Future[WorkerSlot]] = collections.deque()
        self.requests = 0
        self.errors = 0
        self.restarts: collections.Counter[int] = collections.Counter()
        self.recycled = 0
        self.closed = False

    # -- membership (called by worker actors) -------------------------------------------
    def add(self, slot: WorkerSlot) -> None:
        self.slots.append(slot)
        self._by_id[slot.worker_id] = slot
        for _ in range(slot.capacity):
            if not self._hand_over(slot):
                break

    def remove(self, slot: WorkerSlot) -> None:
        if self._by_id.pop(slot.worker_id, None) is not None:
            self.slots.remove(slot)

    def get(self, worker_id: str | None) -> WorkerSlot | None:
        return self._by_id.get(worker_id) if worker_id is not None else None

    def close(self, exc: BaseException) -> None:
        """The pool is going away: every queued caller learns it at once."""
        self.closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)

    # -- checkout / checkin (the hot path) ------------------------------------------------
    def checkout_nowait(self, prefer: str | None = None) -> WorkerSlot | None:
        if prefer is not None:
            slot = self._by_id.get(prefer)
            if (
                slot is not None
                and not slot.draining
                and slot.in_flight < slot.capacity
                and not slot.handle.closed.done()
            ):
                slot.in_flight += 1
                return slot
        best: WorkerSlot | None = None
        best_load = 2.0
        for slot in self.slots:
            if slot.draining or slot.in_flight >= slot.capacity or slot.handle.closed.done():
                continue  # a dead worker leaves as soon as its actor hears of it
            load = slot.in_flight / slot.capacity
            if load < best_load:
                best, best_load = slot, load
                if load == 0.0:
                    break
        if best is not None:
            best.in_flight += 1
        return best

    async def checkout(self, prefer: str | None, timeout: float | None) -> WorkerSlot:
        slot = self.checkout_nowait(prefer)
        if slot is not None:
            return slot
        if self.closed:
            raise PoolBusy(f"pool {self.name!r} is stopping")
        if len(self._waiters) >= self.max_queue:
            raise PoolBusy(
                f"pool {self.name!r}: every worker is busy and {len(self._waiters)} callers "
                f"already wait (max_queue={self.max_queue})"
            )
        wait = self.checkout_timeout if timeout is None else min(timeout, self.checkout_timeout)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WorkerSlot] = loop.create_future()
        self._waiters.append(fut)
        if telemetry._handlers:
            telemetry.execute(
                ("aiotp", "pool", "queue"), {"length": len(self._waiters)}, {"pool": self.name}
            )
        # The timeout settles the future itself (no wait_for): a worker handed over and a
        # timeout can then never both happen, and a handed-over worker is never lost.
        timer = loop.call_later(wait, self._expire, fut, wait)
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.checkin(fut.result())  # handed to us as we were cancelled: pass it on
            elif fut.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise
        finally:
            timer.cancel()

    def _expire(self, fut: asyncio.Future[WorkerSlot], wait: float) -> None:
        if fut.done():
            return
        with contextlib.suppress(ValueError):
            self._waiters.remove(fut)
        fut.set_exception(
            CheckoutTimeout(
                f"pool {self.name!r}: no worker freed up within {wait} s "
                f"({len(self.slots)} workers, all busy)"
            )
        )

    def checkin(self, slot: WorkerSlot) -> None:
        slot.in_flight -= 1
        if slot.draining:
            if slot.in_flight == slot.orphans and slot.ref is not None:
                slot.ref.send("drained")  # its actor may now stop it
        elif slot.worker_id in self._by_id and not slot.handle.closed.done():
            # A dead worker's slot is never handed on, even before its actor removed it: the
            # waiter would be failed by a death that happened before its request was sent.
            self._hand_over(slot)

    def _hand_over(self, slot: WorkerSlot) -> bool:
        """Give `slot`'s free capacity to the first live waiter; False if nobody waits."""
        while self._waiters:
            fut = self._waiters.popleft()
            if fut.done():  # its caller gave up (cancelled)
                continue
            slot.in_flight += 1
            fut.set_result(slot)
            return True
        return False

    # -- introspection ---------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def stats(self, profile: str, size: int, abandoned_threads: int) -> PoolStats:
        workers = tuple(
            WorkerStats(
                worker_id=s.worker_id,
                index=s.index,
                pid=getattr(s.handle, "pid", None),
                busy=s.in_flight,
                capacity=s.capacity,
                requests=s.requests,
                errors=s.errors,
                restarts=self.restarts[s.index],
                draining=s.draining,
            )
            for s in self.slots
        )
        return PoolStats(
            name=self.name,
            profile=profile,
            size=size,
            live=sum(1 for s in self.slots if not s.draining),
            busy=sum(s.in_flight for s in self.slots),
            queued=self.queued,
            capacity=sum(s.capacity for s in self.slots if not s.draining),
            requests=self.requests,
            errors=self.errors,
            restarts=sum(self.restarts.values()),
            recycled=self.recycled,
            abandoned_threads=abandoned_threads,
            workers=workers,
        )
