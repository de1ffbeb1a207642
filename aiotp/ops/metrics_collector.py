"""The metrics the exporter reads at scrape time: latencies, queues, pool counters, sessions.

Why at scrape time: these are states and counters the runtime already keeps for
`rt.pool_stats()` and the session store's stats. Reading them when Prometheus asks costs the
request path nothing; an event per request would cost every request (see `bench_metrics.py`).

Pools are runtime state owned by the runtime's loop, so they are read *on the loop*: the
scraping thread schedules one read there and waits for it (at most ``timeout``, default 5 s).
A loop that is blocked or gone gives a scrape without the pool and actor metrics (and a WARNING
line), never a scrape that hangs; ``aiotp_metrics_runtime_up`` says which. Sessions live in a
thread-safe store and are counted on the scraping thread, so a large store does not stall the
loop. Scraping from the loop's own thread (a web route serving /metrics) reads directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from aiotp.runtime import call_timing
from aiotp.runtime.histogram import BOUNDS

if TYPE_CHECKING:
    from aiotp.runtime.runtime import Runtime
    from aiotp.workers.pool_stats import PoolStats

__all__ = ["RuntimeCollector"]

_log = logging.getLogger("aiotp.metrics")
T = TypeVar("T")
_LE = [f"{b:.6g}" for b in BOUNDS] + ["+Inf"]


@attrs.frozen
class _PoolRead:
    stats: PoolStats
    latency: tuple[list[int], float]
    queue_wait: tuple[list[int], float]


_COUNTERS = (
    "requests",
    "errors",
    "cancelled",
    "queue_timeouts",
    "saturated",
    "retries",
    "restarts",
)


def _plus(a: _PoolRead, b: _PoolRead) -> _PoolRead:
    """`a` with the counters and histograms of `b` added (the gauges are `a`'s)."""
    stats = attrs.evolve(
        a.stats, **{k: getattr(a.stats, k) + getattr(b.stats, k) for k in _COUNTERS}
    )

    def hist(x: tuple[list[int], float], y: tuple[list[int], float]) -> tuple[list[int], float]:
        return [i + j for i, j in zip(x[0], y[0], strict=True)], x[1] + y[1]

    return _PoolRead(stats, hist(a.latency, b.latency), hist(a.queue_wait, b.queue_wait))


def _read_pool(pool: Any) -> _PoolRead:
    d = pool.dispatcher
    return _PoolRead(
        pool.stats(),
        (list(d.latency.counts), d.latency.sum),
        (list(d.queue_wait.counts), d.queue_wait.sum),
    )


@attrs.frozen
class _Read:
    """What one scrape read on the loop."""

    actors: int
    calls: dict[str, tuple[list[int], float]]
    pools: list[_PoolRead]


class RuntimeCollector(Collector):
    """A prometheus_client collector for one runtime (registered in the exporter's registry)."""

    def __init__(self, rt: Runtime, timeout: float = 5.0) -> None:
        self._rt = rt
        self.timeout = timeout
        self._closed = False
        # Reads waiting for the loop: `close` cancels them, so that a scrape in progress does
        # not hold the exporter's close (which may run on that very loop) for `timeout`.
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        # Pool counters never go down within this exporter's life, though a pool stopped and
        # started again under the same name counts from 0: what the instances of a name that
        # are gone counted is kept here and added (read and changed on the loop only).
        self._seen: dict[str, tuple[Any, _PoolRead]] = {}  # name: (instance, its last read)
        self._gone: dict[str, _PoolRead] = {}  # name: sum of its earlier instances' counters

    def close(self) -> None:
        self._closed = True
        for fut in list(self._waiting):
            fut.cancel()

    def describe(self) -> Iterator[Metric]:
        # Names only: the registry checks them for clashes at registration, without a read.
        return iter(self._families(None, None))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self._sessions(), self._read()))

    # -- reading ----------------------------------------------------------------------------
    def _read(self) -> _Read | None:
        rt = self._rt
        if self._closed or not rt.running:
            return None
        try:
            return self._on_loop(rt.loop, self._read_here)
        except concurrent.futures.CancelledError:
            pass  # the exporter is closing
        except TimeoutError:
            _log.warning(
                "metrics: runtime %r did not answer within %.1f s (its loop is blocked); "
                "this scrape has no pool or actor metrics",
                rt.name,
                self.timeout,
            )
        except RuntimeError:
            pass  # the loop closed under us: the runtime is gone
        return None

    def _on_loop(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> T:
        """`fn()` run on `loop`'s thread, waited for at most the timeout (TimeoutError)."""
        try:
            if asyncio.get_running_loop() is loop:
                return fn()
        except RuntimeError:
            pass  # no loop runs in this thread: the usual case, the server's thread
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not done.set_running_or_notify_cancel():
                return  # the scrape gave up already
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self._waiting.add(done)
        if self._closed:  # `close` may have gone through `_waiting` just before the add
            done.cancel()
        try:
            loop.call_soon_threadsafe(run)
            return done.result(self.timeout)
        except concurrent.futures.TimeoutError:
            done.cancel()
            raise TimeoutError from None
        finally:
            self._waiting.discard(done)

    def _read_here(self) -> _Read:
        rt = self._rt
        timing = call_timing.timings.get(rt)
        reg = rt._extensions.get("aiotp.pools")  # not created here if no pool ever ran
        current = {pool.name: pool for pool in (list(reg.pools.values()) if reg else [])}
        for name, (old, last) in list(self._seen.items()):
            if current.get(name) is not old:  # stopped (maybe started again): fold it in
                with contextlib.suppress(Exception):  # else what the last scrape saw
                    last = _read_pool(old)  # a stopped pool's counters no longer move
                gone = self._gone.get(name)
                self._gone[name] = last if gone is None else _plus(last, gone)
                del self._seen[name]
        pools = []
        for name, pool in current.items():
            read = _read_pool(pool)
            self._seen[name] = (pool, read)
            gone = self._gone.get(name)
            pools.append(read if gone is None else _plus(read, gone))
        return _Read(len(rt.actors()), timing.snapshot() if timing else {}, pools)

    def _sessions(self) -> list[tuple[str, Any]] | None:
        """The store's stats and state counts; [] without a store, None when it failed."""
        ext = self._rt._extensions.get("aiotp.sessions")  # not created here if never used
        store = getattr(ext, "store", None)
        if store is None:
            return []
        try:
            if inspect.iscoroutinefunction(getattr(store, "stats", None)):
                return self._sessions_on_loop(store)  # the Redis store answers by coroutine
            out: list[tuple[str, Any]] = [("stats", store.stats())]
            count = getattr(store, "count_by_state", None)  # other stores may not count
            if callable(count):
                out.append(("states", count()))
        except Exception:  # a store backend that is down must not fail the whole scrape
            # DEBUG, not WARNING: Prometheus scrapes every few seconds; the gauge says it.
            _log.debug("metrics: reading the session store failed", exc_info=True)
            return None
        return out

    def _sessions_on_loop(self, store: Any) -> list[tuple[str, Any]] | None:
        """An asynchronous store's stats, awaited on the runtime's loop within the timeout
        (None when that cannot be done: no loop, or the scrape runs on the loop itself)."""
        rt = self._rt
        if self._closed or not rt.running:
            return None
        try:
            if asyncio.get_running_loop() is rt.loop:
                return None  # cannot wait here for a coroutine of this very loop
        except RuntimeError:
            pass

        async def read() -> list[tuple[str, Any]]:
            out: list[tuple[str, Any]] = [("stats", await store.stats())]
            count = getattr(store, "count_by_state", None)
            if callable(count):
                counts = count()
                out.append(("states", await counts if inspect.isawaitable(counts) else counts))
            return out

        done = asyncio.run_coroutine_threadsafe(read(), rt.loop)
        self._waiting.add(done)
        if self._closed:
            done.cancel()
        try:
            return done.result(self.timeout)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            done.cancel()
            return None
        finally:
            self._waiting.discard(done)

    # -- families ---------------------------------------------------------------------------
    def _families(self, sessions: list[tuple[str, Any]] | None, read: _Read | None) -> list[Metric]:
        rt = self._rt.name
        up = GaugeMetricFamily(
            "aiotp_metrics_runtime_up",
            "1 when this scrape could read the runtime's state on its loop, else 0",
            labels=["runtime"],
        )
        sessions_up = GaugeMetricFamily(
            "aiotp_metrics_sessions_up",
            "1 when this scrape could read the session store (or there is none), else 0",
            labels=["runtime"],
        )
        actors = GaugeMetricFamily("aiotp_actors", "Live actors", labels=["runtime"])
        calls = HistogramMetricFamily(
            "aiotp_actor_call_duration_seconds",
            "Time callers waited in ref.call, by the callee's class (any outcome)",
            labels=["runtime", "actor"],
        )
        pool = _PoolFamilies()
        states = GaugeMetricFamily(
            "aiotp_sessions", "Live sessions by lifecycle state", labels=["runtime", "state"]
        )
        ended = CounterMetricFamily(
            "aiotp_sessions_ended",
            "Sessions removed, by reason: deleted, expired (TTL), gc (awaiting input past the "
            "heartbeat timeout)",
            labels=["runtime", "reason"],
        )
        created = CounterMetricFamily(
            "aiotp_sessions_created", "Sessions created", labels=["runtime"]
        )
        up.add_metric([rt], 0 if read is None else 1)
        sessions_up.add_metric([rt], 0 if sessions is None else 1)
        if read is not None:
            actors.add_metric([rt], read.actors)
            for name, (counts, total) in sorted(read.calls.items()):
                calls.add_metric([rt, name], _buckets(counts), total)
            for p in read.pools:
                pool.add(rt, p)
        for kind, value in sessions or []:
            if kind == "states":
                for state, n in sorted(value.items()):
                    states.add_metric([rt, state], n)
            else:
                created.add_metric([rt], value.sessions_created)
                for reason in ("deleted", "expired", "gc"):
                    ended.add_metric([rt, reason], getattr(value, f"sessions_{reason}"))
        return [up, sessions_up, actors, calls, *pool.families(), states, created, ended]


class _PoolFamilies:
    """The pool families of one scrape, filled pool by pool."""

    def __init__(self) -> None:
        labels = ["runtime", "pool"]

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        self.latency = HistogramMetricFamily(
            "aiotp_pool_request_duration_seconds",
            "Time a pool request ran on its worker, from checkout to answer (bucket bounds are "
            "the pool's own: four per decade, 10 us to 100 s)",
            labels=labels,
        )
        self.queue_wait = HistogramMetricFamily(
            "aiotp_pool_queue_wait_seconds",
            "Time a pool request waited for a free worker (0 when one was free)",
            labels=labels,
        )
        self.queued = gauge("aiotp_pool_queue_length", "Callers waiting for a free worker now")
        self.live = gauge("aiotp_pool_workers", "Workers serving now (not draining)")
        self.busy = gauge("aiotp_pool_busy", "Requests running on the pool's workers now")
        self.capacity = gauge("aiotp_pool_capacity", "Requests the pool's workers can run at once")
        self.requests = CounterMetricFamily(
            "aiotp_pool_requests",
            "Finished pool requests by outcome: ok, error (the tool raised or the worker died), "
            "cancelled (the caller left)",
            labels=[*labels, "outcome"],
        )
        self.queue_timeouts = CounterMetricFamily(
            "aiotp_pool_queue_timeouts",
            "Callers that gave up waiting for a free worker (CheckoutTimeout)",
            labels=labels,
        )
        self.saturated = CounterMetricFamily(
            "aiotp_pool_saturated",
            "Requests that found no free worker and had to queue or were refused (PoolBusy)",
            labels=labels,
        )
        self.retries = CounterMetricFamily(
            "aiotp_pool_retries", "Requests retried after their worker crashed", labels=labels
        )
        self.restarts = CounterMetricFamily(
            "aiotp_pool_worker_restarts",
            "Workers restarted by the pool's supervisor after a death",
            labels=labels,
        )

    def add(self, rt: str, read: _PoolRead) -> None:
        s, key = read.stats, [rt, read.stats.name]
        self.latency.add_metric(key, _buckets(read.latency[0]), read.latency[1])
        self.queue_wait.add_metric(key, _buckets(read.queue_wait[0]), read.queue_wait[1])
        self.queued.add_metric(key, s.queued)
        self.live.add_metric(key, s.live)
        self.busy.add_metric(key, s.busy)
        self.capacity.add_metric(key, s.capacity)
        ok = s.requests - s.errors - s.cancelled
        for outcome, n in (("ok", ok), ("error", s.errors), ("cancelled", s.cancelled)):
            self.requests.add_metric([*key, outcome], n)
        self.queue_timeouts.add_metric(key, s.queue_timeouts)
        self.saturated.add_metric(key, s.saturated)
        self.retries.add_metric(key, s.retries)
        self.restarts.add_metric(key, s.restarts)

    def families(self) -> list[Metric]:
        return [
            self.latency,
            self.queue_wait,
            self.queued,
            self.live,
            self.busy,
            self.capacity,
            self.requests,
            self.queue_timeouts,
            self.saturated,
            self.retries,
            self.restarts,
        ]


def _buckets(counts: Sequence[int]) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets from per-bucket counts (the last one is +Inf)."""
    out: list[tuple[str, float]] = []
    seen = 0
    for le, count in zip(_LE, counts, strict=True):
        seen += count
        out.append((le, float(seen)))
    return out
