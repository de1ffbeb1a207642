"""The dispatcher: which worker serves a request, and who waits when none is free.

Why not an actor: a pool request goes caller -> worker directly. The dispatcher's state lives on
the runtime's loop and is touched only from that loop, so a checkout is a plain function call
(a few hundred nanoseconds) rather than a message round trip to a pool process (several
microseconds), and the caller awaits its worker's reply itself. The pool's actors (manager,
workers, heartbeats) own the lifecycle of this state; the hot path never goes through them.

Rules:
- A request goes to the least-loaded live worker with free capacity. Choosing it costs the same
  for 4 workers as for 250: workers with room are kept in buckets by load, and a checkout takes
  one from the lowest non-empty bucket (O(capacity per worker), not O(workers)).
- A new session is placed on the worker with the fewest pinned sessions, then the least loaded
  (`place`, the same kind of index keyed by (pins, load), kept only once a pool sees sessions).
- When every worker is busy the caller waits in one FIFO queue, bounded by ``max_queue``
  (`PoolBusy` at once past it) and by ``checkout_timeout`` (`CheckoutTimeout`). A request that
  must have one particular worker (strict affinity) waits in that worker's own queue, which is
  served first when the worker frees up; those waiters count against ``max_queue`` too, and
  fail with `SessionWorkerLost` at once when the worker dies or is retired. A freed worker is
  handed straight to a waiter, so nobody is overtaken by a newcomer.
- A worker being recycled (``draining``) takes no new work; its replacement starts first.
  With ``max_requests``, a worker that has started that many requests takes no more (the bound
  is exact), and its replacement is asked for at 80% of it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable

from aiotp.runtime import telemetry
from aiotp.workers import pool_stats
from aiotp.workers.errors import CheckoutTimeout, PoolBusy, SessionWorkerLost, WorkerBusy
from aiotp.workers.pool_stats import Histogram, PoolStats, WorkerStats
from aiotp.workers.slot import SlotState, WorkerSlot

__all__ = ["Dispatcher", "PoolStats", "WorkerSlot", "WorkerStats"]

Waiter = asyncio.Future[WorkerSlot]
SERVING = SlotState.SERVING
#: How far into its ``max_requests`` a worker is when its replacement is asked for.
RENEW_AT = 0.8


class Dispatcher:
    def __init__(
        self,
        name: str,
        max_queue: int,
        checkout_timeout: float,
        max_requests: int | None = None,
    ) -> None:
        self.name = name
        self.max_queue = max_queue
        self.checkout_timeout = checkout_timeout
        self.max_requests = max_requests
        self._renew_at = (
            None if max_requests is None else max(1, math.ceil(max_requests * RENEW_AT))
        )
        self.slots: list[WorkerSlot] = []
        self._by_id: dict[str, WorkerSlot] = {}
        self._waiters: collections.deque[Waiter] = collections.deque()
        self._pinned_waiting = 0  # waiters in the workers' own queues
        # Accepting workers with room, by load: _free[n] holds those running n requests.
        self._free: list[dict[WorkerSlot, None]] = []
        # Once sessions are seen: accepting workers by (pins, load), and how many per pins.
        self._placing = False
        self._place: dict[tuple[int, int], dict[WorkerSlot, None]] = {}
        self._pin_counts: dict[int, int] = {}
        self._min_pins = 0
        self._max_capacity = 1
        # Hooks set by the pool: a worker is worn (recycle it), a worker's pins are lost.
        self.on_wear: Callable[[WorkerSlot], None] | None = None
        self.on_gone: Callable[[WorkerSlot], None] | None = None
        self.requests = 0
        self.errors = 0
        self.cancelled = 0
        self.queue_timeouts = 0
        self.saturated = 0
        self.retries = 0
        self.queue_wait = Histogram()
        self.latency = Histogram()
        self.restarts: collections.Counter[int] = collections.Counter()
        self.recycled = 0
        self.closed = False

    # -- the indexes ------------------------------------------------------------------------
    def accepting(self, slot: WorkerSlot) -> bool:
        """Whether `slot` may be given new work (alive, in the pool, not retiring)."""
        return slot.state is SERVING and not slot.handle.closed.done()

    def _reindex(self, slot: WorkerSlot) -> None:
        """Put `slot` in the buckets its load and pins call for (or in none)."""
        if slot.level >= 0:
            del self._free[slot.level][slot]
            slot.level = -1
        if slot.key is not None:
            self._unplace(slot)
        # `accepting`, inlined: this runs twice per request.
        if slot.state is not SERVING or slot.handle.closed.done():
            return
        load = slot.in_flight
        if load < slot.capacity:
            free = self._free
            if len(free) <= load:
                free.extend({} for _ in range(load + 1 - len(free)))
            free[load][slot] = None
            slot.level = load
        if self._placing:
            self._put_placed(slot)

    def _put_placed(self, slot: WorkerSlot) -> None:
        pins = len(slot.sessions)
        key = (pins, min(slot.in_flight, slot.capacity))
        bucket = self._place.get(key)
        if bucket is None:
            bucket = self._place[key] = {}
        bucket[slot] = None
        slot.key = key
        self._pin_counts[pins] = self._pin_counts.get(pins, 0) + 1
        if pins < self._min_pins:
            self._min_pins = pins

    def _unplace(self, slot: WorkerSlot) -> None:
        key = slot.key
        assert key is not None
        bucket = self._place[key]
        del bucket[slot]
        if not bucket:
            del self._place[key]
        left = self._pin_counts[key[0]] - 1
        if left:
            self._pin_counts[key[0]] = left
        else:
            del self._pin_counts[key[0]]
        slot.key = None

    # -- membership (called by worker actors and the pool) -------------------------------
    def add(self, slot: WorkerSlot) -> None:
        slot.state = SERVING
        self.slots.append(slot)
        self._by_id[slot.worker_id] = slot
        self._max_capacity = max(self._max_capacity, slot.capacity)
        self._reindex(slot)
        while slot.in_flight < slot.capacity and self._hand_over(slot):
            pass

    def remove(self, slot: WorkerSlot) -> None:
        if self._by_id.pop(slot.worker_id, None) is not None:
            self.slots.remove(slot)
            if slot.state is not SlotState.DRAINING:
                slot.state = SlotState.GONE
            self._reindex(slot)
            self._lose_pins(slot, "died")

    def drain(self, slot: WorkerSlot) -> None:
        """`slot` takes no new work from now on (it is being replaced or retired)."""
        if slot.state is SlotState.DRAINING:
            return
        slot.state = SlotState.DRAINING
        self._reindex(slot)
        self._lose_pins(slot, "was retired")

    def _lose_pins(self, slot: WorkerSlot, how: str) -> None:
        """The worker is gone for its sessions: their waiters fail now, their pins go."""
        while slot.waiters:
            fut, session = slot.waiters.popleft()
            self._pinned_waiting -= 1
            if not fut.done():
                fut.set_exception(
                    SessionWorkerLost(
                        f"pool {self.name!r}: worker {slot.worker_id}, which holds session "
                        f"{session!r}, {how}; its state for the session is gone",
                        session,
                        slot.worker_id,
                    )
                )
        if self.on_gone is not None and slot.sessions:
            self.on_gone(slot)

    def get(self, worker_id: str | None) -> WorkerSlot | None:
        return self._by_id.get(worker_id) if worker_id is not None else None

    def close(self, exc: BaseException) -> None:
        """The pool is going away: every queued caller learns it at once."""
        self.closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
        for slot in self.slots:
            while slot.waiters:
                fut, _session = slot.waiters.popleft()
                self._pinned_waiting -= 1
                if not fut.done():
                    fut.set_exception(exc)

    # -- sessions: pins and placement ---------------------------------------------------------
    def pin(self, slot: WorkerSlot, session: str) -> None:
        slot.sessions.add(session)
        if slot.key is not None:
            self._unplace(slot)
            self._put_placed(slot)

    def unpin(self, slot: WorkerSlot, session: str) -> None:
        slot.sessions.discard(session)
        slot.settings_sent.pop(session, None)
        if slot.key is not None:
            self._unplace(slot)
            self._put_placed(slot)

    def place(self) -> WorkerSlot | None:
        """The worker a new session should be pinned to: fewest pins, then least loaded."""
        if not self._placing:
            self._placing = True
            for slot in self.slots:
                self._reindex(slot)
        counts = self._pin_counts
        for _ in range(len(self.slots) + 1):  # each round drops a worker that just died
            if not counts:
                return None
            if self._min_pins not in counts:
                self._min_pins = min(counts)  # O(distinct pin counts), rarely taken
            pins = self._min_pins
            for load in range(self._max_capacity + 1):
                bucket = self._place.get((pins, load))
                while bucket:
                    slot = next(iter(bucket))
                    if not slot.handle.closed.done():
                        return slot
                    self._reindex(slot)  # died a moment ago: out of every bucket
        return None

    # -- checkout / checkin (the hot path) ------------------------------------------------
    def _take(self, slot: WorkerSlot) -> None:
        slot.in_flight += 1
        slot.started += 1
        if self._renew_at is not None and slot.started >= self._renew_at:
            assert self.max_requests is not None
            if slot.started >= self.max_requests and slot.state is SERVING:
                slot.state = SlotState.WORN  # the bound: not one request more
                self._lose_pins(slot, "reached max_requests")
            if self.on_wear is not None:
                self.on_wear(slot)  # start its replacement (once)
        self._reindex(slot)

    def checkout_nowait(self) -> WorkerSlot | None:
        """The least-loaded accepting worker with room, taken; None when all are busy."""
        for bucket in self._free:
            while bucket:
                slot, _ = bucket.popitem()
                slot.level = -1
                if slot.handle.closed.done():
                    self._reindex(slot)  # died a moment ago: drop it from the buckets
                    continue
                self._take(slot)
                return slot
        return None

    def has_room(self, slot: WorkerSlot) -> bool:
        return slot.level >= 0 and not slot.handle.closed.done()

    def take(self, slot: WorkerSlot) -> None:
        """Take `slot`, which `has_room`."""
        del self._free[slot.level][slot]
        slot.level = -1
        self._take(slot)

    def take_now(self) -> WorkerSlot | None:
        """`checkout_nowait`, counted as a checkout that did not wait."""
        slot = self.checkout_nowait()
        if slot is not None:
            self.queue_wait.counts[0] += 1
            self.queue_wait.total += 1
        return slot

    async def checkout(self, timeout: float | None) -> WorkerSlot:
        slot = self.checkout_nowait()
        if slot is not None:
            self.queue_wait.counts[0] += 1  # no wait: the first bucket, without a bisect
            self.queue_wait.total += 1
            return slot
        fut = self._enqueue(None)
        self._waiters.append(fut)
        return await self._wait(fut, timeout, None)

    async def checkout_on(
        self, slot: WorkerSlot, session: str, timeout: float | None, wait: bool
    ) -> WorkerSlot:
        """`slot` itself (a session pinned to it): at once, in its own queue, or `WorkerBusy`."""
        if self.has_room(slot):
            self.take(slot)
            self.queue_wait.counts[0] += 1
            self.queue_wait.total += 1
            return slot
        if not wait:
            self.saturated += 1
            raise WorkerBusy(
                f"pool {self.name!r}: worker {slot.worker_id}, which holds session "
                f"{session!r}, is busy ({slot.in_flight}/{slot.capacity}) and the pool's "
                "affinity is strict_fail_fast",
                session,
                slot.worker_id,
            )
        fut = self._enqueue(slot.worker_id)
        slot.waiters.append((fut, session))
        self._pinned_waiting += 1
        return await self._wait(fut, timeout, slot)

    def _enqueue(self, worker: str | None) -> Waiter:
        self.saturated += 1
        if self.closed:
            raise PoolBusy(f"pool {self.name!r} is stopping")
        queued = len(self._waiters) + self._pinned_waiting
        if queued >= self.max_queue:
            whom = "every worker is busy" if worker is None else f"worker {worker} is busy"
            raise PoolBusy(
                f"pool {self.name!r}: {whom} and {queued} callers already wait "
                f"(max_queue={self.max_queue})"
            )
        if telemetry._handlers:
            telemetry.execute(
                ("aiotp", "pool", "queue"), {"length": queued + 1}, {"pool": self.name}
            )
        return asyncio.get_running_loop().create_future()

    async def _wait(
        self, fut: Waiter, timeout: float | None, slot: WorkerSlot | None
    ) -> WorkerSlot:
        loop = asyncio.get_running_loop()
        wait = self.checkout_timeout if timeout is None else min(timeout, self.checkout_timeout)
        # The timeout settles the future itself (no wait_for): a worker handed over and a
        # timeout can then never both happen, and a handed-over worker is never lost.
        timer = loop.call_later(wait, self._expire, fut, wait, slot)
        queued_at = time.perf_counter()  # a duration: loop.time has 1 ms steps under uvloop
        try:
            got = await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Handed to us as we were cancelled: pass it on, and the request it was
                # counted for never started (max_requests counts requests started).
                slot = fut.result()
                slot.started -= 1
                if slot.state is SlotState.WORN and slot.started < (self.max_requests or 0):
                    slot.state = SERVING
                self.checkin(slot)
            elif fut.cancelled():
                self._forget(fut, slot)
            raise
        finally:
            timer.cancel()
        self.queue_wait.record(time.perf_counter() - queued_at)
        return got

    def _forget(self, fut: Waiter, slot: WorkerSlot | None) -> None:
        if slot is None:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            return
        for entry in slot.waiters:
            if entry[0] is fut:
                slot.waiters.remove(entry)
                self._pinned_waiting -= 1
                return

    def _expire(self, fut: Waiter, wait: float, slot: WorkerSlot | None) -> None:
        if fut.done():
            return
        self._forget(fut, slot)
        self.queue_timeouts += 1
        whom = f"{len(self.slots)} workers, all busy" if slot is None else f"{slot.worker_id}"
        fut.set_exception(
            CheckoutTimeout(f"pool {self.name!r}: no worker freed up within {wait} s ({whom})")
        )

    def checkin(self, slot: WorkerSlot) -> None:
        slot.in_flight -= 1
        if slot.state is SERVING and not slot.handle.closed.done():
            # A dead worker's slot is never handed on, even before its actor removed it: the
            # waiter would be failed by a death that happened before its request was sent.
            if (slot.waiters or self._waiters) and self._hand_over(slot):
                return
            self._reindex(slot)
            return
        self._reindex(slot)
        if slot.state is SlotState.DRAINING and slot.in_flight == slot.orphans and slot.ref:
            slot.ref.send("drained")  # its actor may now stop it

    def _hand_over(self, slot: WorkerSlot) -> bool:
        """Give one unit of `slot`'s capacity to the first live waiter that may have it: its
        own (pinned) waiters first, then the pool's queue. False if nobody waits."""
        own = slot.waiters
        while own:
            fut, _session = own.popleft()
            self._pinned_waiting -= 1
            if not fut.done():
                self._take(slot)
                fut.set_result(slot)
                return True
        while self._waiters:
            fut = self._waiters.popleft()
            if fut.done():  # its caller gave up (cancelled)
                continue
            self._take(slot)
            fut.set_result(slot)
            return True
        return False

    # -- introspection ---------------------------------------------------------------------
    @property
    def queued(self) -> int:
        general = sum(1 for f in self._waiters if not f.done())
        return general + sum(1 for s in self.slots for f, _ in s.waiters if not f.done())

    def stats(self, profile: str, size: int, abandoned_threads: int, affinity: str) -> PoolStats:
        return pool_stats.snapshot(self, profile, size, abandoned_threads, affinity)
