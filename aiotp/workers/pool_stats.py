"""What `rt.pool_stats(name)` reports.

Its latency percentiles come from `aiotp.runtime.histogram.Histogram` (re-exported here), cheap
enough for the hot path of every request: fixed log-spaced buckets, no allocation per value; a
percentile is read back as its bucket's upper bound (within 78% of the true value).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from aiotp.runtime.histogram import Histogram

if TYPE_CHECKING:
    from aiotp.workers.dispatcher import Dispatcher

__all__ = ["Histogram", "Percentiles", "PoolStats", "WorkerStats", "snapshot"]

@attrs.frozen
class Percentiles:
    """``count`` values recorded; ``p50``/``p99`` in seconds (bucket upper bounds), or None."""

    count: int
    p50: float | None
    p99: float | None


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
    pinned_sessions: int = 0
    started: int = 0
    state: str = "serving"  # its SlotState: serving, worn, draining (or gone)


@attrs.frozen
class PoolStats:
    """`rt.pool_stats(name)`: a snapshot, safe to keep.

    ``requests``/``errors``/``cancelled`` count finished requests (a consumer leaving a stream
    early, or a caller cancelling, is ``cancelled``, not an error); ``queue_timeouts`` the
    callers that got `CheckoutTimeout`; ``saturated`` the requests that found no free worker
    and had to queue (or were refused); ``queue_wait`` and ``latency`` (execution, after
    checkout) are percentiles in seconds; ``affinity`` is the pool's default mode and
    ``pinned_sessions`` the sessions pinned to its live workers.
    """

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
    cancelled: int = 0
    queue_timeouts: int = 0
    saturated: int = 0
    retries: int = 0
    queue_wait: Percentiles = Percentiles(0, None, None)
    latency: Percentiles = Percentiles(0, None, None)
    affinity: str = "hint"
    pinned_sessions: int = 0


def snapshot(
    self: Dispatcher, profile: str, size: int, abandoned_threads: int, affinity: str
) -> PoolStats:
    """The `PoolStats` of a dispatcher now."""
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
            pinned_sessions=len(s.sessions),
            started=s.started,
            state=s.state.value,
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
        cancelled=self.cancelled,
        queue_timeouts=self.queue_timeouts,
        saturated=self.saturated,
        retries=self.retries,
        queue_wait=_summary(self.queue_wait),
        latency=_summary(self.latency),
        affinity=affinity,
        pinned_sessions=sum(len(s.sessions) for s in self.slots if not s.draining),
    )


def _summary(histogram: Histogram) -> Percentiles:
    return Percentiles(histogram.total, histogram.percentile(50), histogram.percentile(99))
