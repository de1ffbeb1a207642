"""A cheap latency histogram for hot paths: fixed, log-spaced buckets, no allocation per value.

Why not prometheus_client's Histogram: its ``observe`` takes a lock and walks every bucket,
several times the cost of the request path it would measure (an actor call is ~10 us). Here
recording a value is one bisect over 29 bounds (four per decade from 10 us to 100 s), two
increments and an add, on the thread that owns the histogram (the runtime's loop); readers on
other threads copy `counts` (one list copy, atomic under the GIL) and may see a value counted
in `total` but not yet in `counts` or `sum`: within one value, which is all a scrape needs.

A percentile is read back as its bucket's upper bound (within 78% of the true value, which is
what an operator's p50/p99 needs; exact values come from telemetry). The metrics exporter turns
the same counts into a Prometheus histogram (`BOUNDS` are its ``le`` labels).

Lives in the runtime layer because actor calls (`aiotp.runtime.call_timing`) and pools
(`aiotp.workers.pool_stats`, which re-exports it) both record into it.
"""

from __future__ import annotations

import bisect

__all__ = ["BOUNDS", "Histogram"]

BOUNDS: tuple[float, ...] = tuple(10 ** (e / 4) * 1e-5 for e in range(29))  # 10 us .. 100 s


class Histogram:
    """Counts of values (seconds) per fixed bucket; the last bucket holds values past 100 s."""

    __slots__ = ("counts", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.total = 0
        self.sum = 0.0

    def record(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BOUNDS, seconds)] += 1
        self.total += 1
        self.sum += seconds

    def percentile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-th percentile (None when empty; the
        last bucket, values past 100 s, reports infinity)."""
        if not self.total:
            return None
        rank = q / 100.0 * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return BOUNDS[index] if index < len(BOUNDS) else float("inf")
        return float("inf")
