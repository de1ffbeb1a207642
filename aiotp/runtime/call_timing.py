"""Actor call latency, per callee class, recorded only while someone (the metrics exporter) asks.

The problem: an operator wants the latency of ``ref.call`` per actor class, but the call path is
the hottest path of the runtime (~10 us a round trip) and most programs never look. So
`ActorRef.call` records only when its runtime is in `timings`, a dict that stays empty unless a
consumer called `enable`: without one the call pays one truth test of an empty dict; with one,
a counter bump, and for one call in `SAMPLE_EVERY` two ``perf_counter`` reads, a dict lookup and
a histogram bump (``benchmarks/bench_metrics.py`` measures both).

A sampled call is recorded when it ends, whatever its outcome (reply, exception, timeout, the
callee exiting): the time a caller waited. The clock is ``time.perf_counter``, not ``loop.time()``:
uvloop's loop time has millisecond resolution, coarser than a call.

Consumers share one `CallTiming` per runtime: `enable` counts them and `disable` stops the
recording when the last one leaves. Both are called on the runtime's loop (or before it runs);
readers on other threads take `CallTiming.snapshot`.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from aiotp.runtime.histogram import BOUNDS, Histogram

if TYPE_CHECKING:
    from aiotp.runtime.runtime import Runtime

__all__ = ["SAMPLE_EVERY", "SAMPLE_MASK", "CallTiming", "disable", "enable", "timings"]

# One call in SAMPLE_EVERY (a power of two: `ref.call` tests ``tick & SAMPLE_MASK``) is timed;
# the snapshot scales the sample back up. Timing every call cost 1.08-1.17x on a ~5-10 us
# round trip (bench_metrics.py); a sample of one in eight keeps the exporter within 1.1x, and
# a latency distribution needs a sample, not every call. Classes called fewer than eight times
# between scrapes may not show yet: their calls are counted once sampled.
SAMPLE_EVERY = 8
SAMPLE_MASK = SAMPLE_EVERY - 1


class CallTiming:
    """One runtime's call latency histograms, by the callee's class."""

    __slots__ = ("by_class", "tick", "users")

    def __init__(self) -> None:
        self.by_class: dict[type, Histogram] = {}
        self.users = 0
        self.tick = 0  # calls seen; `ref.call` times those where tick & SAMPLE_MASK == 0

    def record(self, kind: type | None, seconds: float) -> None:
        hist = self.by_class.get(kind)  # type: ignore[arg-type]
        if hist is None:
            if kind is None:
                return
            hist = self.by_class[kind] = Histogram()
        # Histogram.record, inlined: one Python call less on every timed call.
        hist.counts[bisect_left(BOUNDS, seconds)] += 1
        hist.total += 1
        hist.sum += seconds

    def snapshot(self) -> dict[str, tuple[list[int], float]]:
        """Bucket counts and sum per class name, safe to take from another thread (classes of
        one name, from different modules, are added together)."""
        out: dict[str, tuple[list[int], float]] = {}
        for kind, hist in list(self.by_class.items()):
            # The sample, scaled back to an estimate of every call.
            counts = [n * SAMPLE_EVERY for n in hist.counts]
            total = hist.sum * SAMPLE_EVERY
            seen = out.get(kind.__name__)
            if seen is not None:
                counts = [a + b for a, b in zip(seen[0], counts, strict=True)]
                total += seen[1]
            out[kind.__name__] = (counts, total)
        return out


# Runtime -> its timing. Mutated in place, never rebound: `ref.py` holds this very dict.
timings: dict[Runtime, CallTiming] = {}


def enable(rt: Runtime) -> CallTiming:
    """Start recording `rt`'s call latencies (or join the consumers already recording)."""
    timing = timings.get(rt)
    if timing is None:
        timing = timings[rt] = CallTiming()
    timing.users += 1
    return timing


def disable(rt: Runtime) -> None:
    """Leave; the last consumer to leave stops the recording and drops the histograms."""
    timing = timings.get(rt)
    if timing is None:
        return
    timing.users -= 1
    if timing.users <= 0:
        del timings[rt]
