"""A Prometheus exporter for one runtime (``aiotp.metrics``), built on prometheus_client.

The problem: an operator wants the runtime's health on a dashboard (how long calls and pool
requests take, how long the queues are, which workers die and why, which supervisors give up,
how many sessions are in which state) without the runtime paying for it on every request.

    exporter = aiotp.metrics.serve_metrics(rt, port=9100)   # http://127.0.0.1:9100/metrics
    ...
    exporter.close()

or ``with aiotp.metrics.Metrics(rt) as m: port = m.serve()``, or
``python -m aiotp run app --metrics-port 9100``. Every metric, with its labels, is listed in the
README ("Metrics"); each carries a ``runtime`` label (``Runtime(name=)``).

How it is fed, and what that costs:
- Things that happen (worker starts, deaths by cause, recycles, missed heartbeats, supervisor
  restarts, intensity exhaustion) are counted from telemetry events as they happen
  (`aiotp.ops.metrics_events`). With the exporter installed, every telemetry emitter in the
  process builds its event (handlers attached make `telemetry.execute` no longer free), but the
  per-request ones reach none of its handlers.
- States (queue lengths, busy workers, pool counters, request and queue-wait latency
  histograms, sessions by state) are read when Prometheus scrapes, from the counters and
  histograms the pools and the session store keep anyway (`aiotp.ops.metrics_collector`).
- Actor call latency is recorded per call while an exporter is installed
  (`aiotp.runtime.call_timing`): two clock reads and a histogram bump per ``ref.call``.
  ``benchmarks/bench_metrics.py`` measures the call path with and without the exporter.

Guarantees:
- Several runtimes and exporters in one process do not collide: each exporter has its own
  registry (not prometheus_client's global one unless passed as ``registry=``) and counts only
  its runtime's events.
- The endpoint binds to 127.0.0.1 by default; a port in use or a bad host is a
  `MetricsServerError` at `serve`, with nothing left running.
- `close` detaches every telemetry handler, stops the call timing it asked for and stops the
  server, its thread joined; it is idempotent. A scrape in progress during `close` ends at once,
  and `close` returns within about a second whatever the clients do (it runs on the loop).
- One slow or stalled client does not hold the others: each request has a thread of its own
  (16 at once) and a deadline (``scrape_timeout`` + 10 s) after which its socket is shut.
- A scrape never hangs on a blocked loop: past ``scrape_timeout`` (default 5 s, the call
  default) it answers without the pool and actor metrics and ``aiotp_metrics_runtime_up`` 0.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from aiotp.ops.metrics_collector import RuntimeCollector
from aiotp.ops.metrics_events import EventMetrics
from aiotp.ops.metrics_server import REQUEST_TIMEOUT, MetricsServer, MetricsServerError
from aiotp.runtime import call_timing
from aiotp.runtime.errors import AiotpError

if TYPE_CHECKING:
    import threading

    from aiotp.runtime.runtime import Runtime

__all__ = ["Metrics", "MetricsServerError", "serve_metrics"]


class _Phase(enum.Enum):
    INSTALLED = "INSTALLED"  # counting, not serving
    SERVING = "SERVING"
    CLOSED = "CLOSED"


_MOVES = {
    _Phase.INSTALLED: {_Phase.SERVING, _Phase.CLOSED},
    _Phase.SERVING: {_Phase.CLOSED},
    _Phase.CLOSED: set(),
}


class Metrics:
    """The exporter of one runtime: counts from the moment it is made, serves on `serve`.

    ``registry`` defaults to a registry of its own; pass prometheus_client's ``REGISTRY`` to
    add the runtime's metrics to your process's other metrics (one exporter per registry).
    ``call_latency=False`` leaves ``aiotp_actor_call_duration_seconds`` out, and with it the
    exporter's only per-request cost (about 0.3 us per ``ref.call``).
    """

    def __init__(
        self,
        rt: Runtime,
        *,
        registry: CollectorRegistry | None = None,
        scrape_timeout: float = 5.0,
        call_latency: bool = True,
    ) -> None:
        if not (isinstance(scrape_timeout, int | float) and scrape_timeout > 0):
            raise ValueError(f"scrape_timeout must be a positive number, got {scrape_timeout!r}")
        self.runtime = rt
        self.registry = registry if registry is not None else CollectorRegistry()
        self._server: MetricsServer | None = None
        self._collector = RuntimeCollector(rt, float(scrape_timeout))
        self.registry.register(self._collector)
        try:
            self._events = EventMetrics(rt, self.registry)
        except BaseException:
            self.registry.unregister(self._collector)
            raise
        self._call_latency = bool(call_latency)
        if self._call_latency:
            call_timing.enable(rt)
        self._phase = _Phase.INSTALLED

    def __repr__(self) -> str:
        where = f" {self.url}" if self._server is not None else ""
        return f"<Metrics runtime={self.runtime.name!r} {self._phase.name}{where}>"

    def _move(self, new: _Phase) -> None:
        if new not in _MOVES[self._phase]:
            raise AiotpError(f"{self!r}: cannot go from {self._phase.name} to {new.name}")
        self._phase = new

    @property
    def port(self) -> int | None:
        """The port served on (the one picked when `serve` was given 0), or None."""
        return self._server.port if self._server is not None else None

    @property
    def url(self) -> str | None:
        if self._server is None:
            return None
        host = self._server.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self._server.port}/metrics"

    @property
    def thread(self) -> threading.Thread | None:
        """The server's thread while serving (tests check it is gone after `close`)."""
        return self._server.thread if self._server is not None else None

    @property
    def handler_ids(self) -> list[str]:
        """The telemetry handler ids this exporter attached."""
        return self._events.handler_ids

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve ``GET /metrics`` on `host`:`port` in a thread of its own; returns the port.

        ``port=0`` picks a free port. `MetricsServerError` if it cannot be served there;
        `AiotpError` if this exporter already serves or was closed."""
        if self._phase is not _Phase.INSTALLED:
            raise AiotpError(f"{self!r}: serve() needs an INSTALLED exporter")
        # A request's deadline leaves room for a scrape that waits `scrape_timeout` for the loop.
        deadline = self._collector.timeout + REQUEST_TIMEOUT
        self._server = MetricsServer(self.registry, port, host, deadline=deadline)
        self._move(_Phase.SERVING)
        return self._server.port

    def close(self) -> None:
        """Detach, stop counting and stop serving (idempotent; see the module docstring)."""
        if self._phase is _Phase.CLOSED:
            return
        self._move(_Phase.CLOSED)
        self._collector.close()  # a scrape waiting for the loop (maybe this thread) ends now
        self._events.detach()
        if self._call_latency:
            call_timing.disable(self.runtime)
        if self._server is not None:
            self._server.close()
        self.registry.unregister(self._collector)

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scrape(self) -> bytes:
        """The text a scrape gets now, without HTTP (for tests and custom endpoints)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def serve_metrics(rt: Runtime, port: int = 0, host: str = "127.0.0.1", **options: Any) -> Metrics:
    """Install an exporter for `rt` and serve it (what ``--metrics-port`` does); the exporter
    is returned serving (its `port`, `url`), to be `close`\\ d when the runtime stops.
    ``options`` go to `Metrics` (``registry=``, ``scrape_timeout=``, ``call_latency=``)."""
    exporter = Metrics(rt, **options)
    try:
        exporter.serve(port, host)
    except BaseException:
        exporter.close()
        raise
    return exporter
