"""The metrics the exporter counts from telemetry events: worker starts, deaths, recycles,
missed heartbeats, supervisor restarts and intensity exhaustion.

These are things that happen (a worker died), not states one can read at scrape time, so they
are counted as they happen, by telemetry handlers, into prometheus_client counters (thread-safe;
the handlers run on the runtime's loop, scrapes on the server's thread). States (queue lengths,
latencies, sessions) are read at scrape time instead, see `aiotp.ops.metrics_collector`.

Telemetry is process-wide: a handler also sees the events of other runtimes in the process.
Each event is checked to be this runtime's: a supervisor event by its supervisor's runtime, a
worker event by the tag of the pool instance in its worker id (``pool-0.3.<tag>``), learnt from
this runtime's pool registry the first time a worker of that pool shows up.

Three handlers, each on the narrowest prefix it needs, rather than one on ``("aiotp",)``:
`telemetry.execute` compares every event against every attached prefix, and the hottest events
(a pool's per-request start/stop) then reach no handler at all.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from aiotp.runtime import telemetry
from aiotp.runtime.messages import is_normal_exit
from aiotp.workers.errors import WorkerCrashed
from aiotp.workers.heartbeat import HeartbeatTimeout

if TYPE_CHECKING:
    from aiotp.runtime.runtime import Runtime

__all__ = ["DEATH_CAUSES", "EventMetrics", "death_cause", "label_of"]

#: Why a worker died, as the ``cause`` label of ``aiotp_pool_worker_deaths_total``.
DEATH_CAUSES = ("exited", "heartbeat", "protocol", "killed", "error")

_ids = itertools.count()


class EventMetrics:
    """Telemetry handlers feeding counters in `registry`, for one runtime's events."""

    def __init__(self, rt: Runtime, registry: CollectorRegistry) -> None:
        self._rt = rt
        self._registry = registry
        self._tags: set[str] = set()  # the pool instances of this runtime seen so far
        labels = ["runtime", "pool"]
        self.worker_starts = Counter(
            "aiotp_pool_worker_starts",
            "Workers started (first starts, restarts after a death, replacements of recycled ones)",
            labels,
            registry=registry,
        )
        self.worker_deaths = Counter(
            "aiotp_pool_worker_deaths",
            "Workers that died unplanned, by cause: exited (the process or its connection ended "
            "on its own: exit, signal, OOM killer), heartbeat (missed too many), protocol (broke "
            "the wire protocol), killed (an untrappable kill), error (the worker actor crashed)",
            [*labels, "cause"],
            registry=registry,
        )
        self.worker_recycles = Counter(
            "aiotp_pool_worker_recycles",
            "Workers retired gracefully after their replacement started, by cause: max_requests, "
            "ttl, memory (max_memory_mb), overrun (a tool outlived its caller past cancel_grace)",
            [*labels, "cause"],
            registry=registry,
        )
        self.heartbeats_missed = Counter(
            "aiotp_pool_heartbeats_missed",
            "Heartbeat pings a worker did not answer in time",
            labels,
            registry=registry,
        )
        self.supervisor_restarts = Counter(
            "aiotp_supervisor_restarts",
            "Children a supervisor restarted after they died (pool workers included)",
            ["runtime", "supervisor", "child"],
            registry=registry,
        )
        self.intensity_exceeded = Counter(
            "aiotp_supervisor_intensity_exceeded",
            "Times a supervisor gave up: more than max_restarts restarts in max_seconds, so it "
            "shut down and left the decision to its own supervisor",
            ["runtime", "supervisor"],
            registry=registry,
        )
        base = f"aiotp.metrics.{next(_ids)}"
        self._handler_ids = [f"{base}.workers", f"{base}.heartbeat", f"{base}.supervisor"]
        # Attached together or not at all: a failure half-way leaves nothing behind.
        try:
            telemetry.attach(self._handler_ids[0], ("aiotp", "pool", "worker"), self._on_worker)
            telemetry.attach(
                self._handler_ids[1], ("aiotp", "pool", "heartbeat", "missed"), self._on_missed
            )
            telemetry.attach(self._handler_ids[2], ("aiotp", "supervisor"), self._on_supervisor)
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Detach the handlers and take the counters out of the registry (idempotent)."""
        for handler_id in self._handler_ids:
            telemetry.detach(handler_id)
        for counter in self._counters():
            with contextlib.suppress(KeyError):  # already taken out
                self._registry.unregister(counter)

    def _counters(self) -> list[Counter]:
        return [
            self.worker_starts,
            self.worker_deaths,
            self.worker_recycles,
            self.heartbeats_missed,
            self.supervisor_restarts,
            self.intensity_exceeded,
        ]

    @property
    def handler_ids(self) -> list[str]:
        return list(self._handler_ids)

    # -- handlers (on the emitting runtime's loop) ------------------------------------------
    def _on_worker(
        self, event: telemetry.Event, _m: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        if len(event) != 4 or not self._ours(meta):
            return
        what, pool, rt = event[3], str(meta["pool"]), self._rt.name
        if what == "spawned":
            self.worker_starts.labels(rt, pool).inc()
        elif what == "terminated":
            cause = death_cause(meta.get("reason"))
            if cause is not None:
                self.worker_deaths.labels(rt, pool, cause).inc()
        elif what == "recycled":
            self.worker_recycles.labels(rt, pool, meta.get("cause") or "max_requests").inc()

    def _on_missed(
        self, _e: telemetry.Event, _m: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        if self._ours(meta):
            self.heartbeats_missed.labels(self._rt.name, str(meta["pool"])).inc()

    def _on_supervisor(
        self, event: telemetry.Event, _m: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> None:
        sup = meta.get("supervisor")
        if getattr(sup, "_rt", None) is not self._rt:
            return
        name = label_of(sup)
        if event == ("aiotp", "supervisor", "child", "restarted"):
            self.supervisor_restarts.labels(
                self._rt.name, name, label_of(meta.get("child_id"))
            ).inc()
        elif event == ("aiotp", "supervisor", "intensity_exceeded"):
            self.intensity_exceeded.labels(self._rt.name, name).inc()

    def _ours(self, meta: Mapping[str, Any]) -> bool:
        """Whether a worker event comes from one of this runtime's pools (see the docstring)."""
        tag = str(meta.get("worker_id", "")).rpartition(".")[2]
        if tag in self._tags:
            return True
        reg = self._rt._extensions.get("aiotp.pools")  # not created here if no pool ever ran
        pool = reg.pools.get(meta.get("pool")) if reg is not None else None
        if pool is not None and pool.tag == tag:
            self._tags.add(tag)
            return True
        return False


def death_cause(reason: Any) -> str | None:
    """The ``cause`` label of a worker that ended with `reason`; None for a planned end (a
    recycled worker retiring, a shutdown)."""
    if is_normal_exit(reason):
        return None
    if isinstance(reason, HeartbeatTimeout):
        return "heartbeat"
    if reason in ("kill", "killed"):
        return "killed"
    if isinstance(reason, WorkerCrashed):
        return "protocol" if "protocol error" in str(reason) else "exited"
    return "error"


def label_of(value: Any) -> str:
    """A label value for a registered name or child id: tuples joined with "/" (a pool's
    workers' supervisor is ``aiotp.pool/ml/workers``), an unnamed actor by its class."""
    if isinstance(value, tuple):
        return "/".join(map(str, value))
    name = getattr(value, "name", value)
    if name is None:
        kind = getattr(value, "_kind", None)
        return kind.__name__ if isinstance(kind, type) else "unnamed"
    return label_of(name) if isinstance(name, tuple) else str(name)
