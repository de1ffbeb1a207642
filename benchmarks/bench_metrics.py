"""The cost of the Prometheus exporter on the request paths: the same job with and without it.

The "floor" of each row is aiotp itself without an exporter, measured in the same run,
alternating: the ratio is what installing `aiotp.ops.metrics.Metrics` (serving on 127.0.0.1,
not scraped) costs. Rows:

- call round trip (``bench_messaging``'s call job): with the exporter each ``ref.call`` is timed
  into its class's histogram (target: ratio <= 1.1);
- cast throughput (``bench_messaging``'s cast job): casts record nothing, but telemetry handlers
  are attached (target: ratio >= 0.9);
- pool execute, thread and process profiles, sequential (``bench_pool``'s job): with handlers
  attached, every request builds its telemetry start/stop events (none of the exporter's
  handlers takes them) and the pool's own histograms are read at scrape time only;
- a scrape: one ``GET /metrics`` of a runtime with a pool and 10,000 sessions, against the
  same request to an exporter of an empty registry (the HTTP and text-format floor).

    python benchmarks/bench_metrics.py [--json] [--quick]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Row, alternate, emit, parse_args

import aiotp
from aiotp.ops.metrics import Metrics
from aiotp.ops.metrics_server import MetricsServer
from aiotp.runtime.loop import loop_factory

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)
ADAPTER = "echo_adapter:Echo"


class Sink(aiotp.Actor):
    """bench_messaging's actor: counts casts, echoes calls."""

    async def init(self) -> None:
        self.left = 0
        self.done: asyncio.Future[None] | None = None

    async def handle_cast(self, msg: Any) -> None:
        self.left -= 1
        if self.left == 0 and self.done is not None:
            self.done.set_result(None)

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        return msg


def _run(factory: Callable[[], asyncio.AbstractEventLoop], coro: Any) -> float:
    with asyncio.Runner(loop_factory=factory) as runner:
        return float(runner.run(coro))


def _exporter(rt: aiotp.Runtime, on: bool) -> Metrics | None:
    if not on:
        return None
    exporter = Metrics(rt)
    exporter.serve()
    return exporter


async def call_us(n: int, metrics: bool) -> float:
    async with aiotp.Runtime() as rt:
        exporter = _exporter(rt, metrics)
        try:
            ref = await rt.spawn(Sink)
            t0 = time.perf_counter()
            for i in range(n):
                await ref.call(i)
            return (time.perf_counter() - t0) / n * 1e6
        finally:
            if exporter is not None:
                exporter.close()


async def cast_rate(n: int, metrics: bool) -> float:
    async with aiotp.Runtime() as rt:
        exporter = _exporter(rt, metrics)
        try:
            ref = await rt.spawn(Sink)
            actor: Any = ref._actor
            actor.left = n
            actor.done = asyncio.get_running_loop().create_future()
            t0 = time.perf_counter()
            for i in range(n):
                await ref.cast(i)
                await asyncio.sleep(0)  # interleave producer and consumer, as bench_messaging
            await actor.done
            return n / (time.perf_counter() - t0)
        finally:
            if exporter is not None:
                exporter.close()


async def execute_us(n: int, profile: str, metrics: bool) -> float:
    async with aiotp.Runtime() as rt:
        exporter = _exporter(rt, metrics)
        try:
            await rt.start_pool("b", ADAPTER, profile=profile, size=1, heartbeat=None)
            await rt.execute("b", "echo", {"value": 0})
            t0 = time.perf_counter()
            for i in range(n):
                await rt.execute("b", "echo", {"value": i})
            return (time.perf_counter() - t0) / n * 1e6
        finally:
            if exporter is not None:
                exporter.close()


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=30) as reply:
        reply.read()


async def scrape_ms(sessions: int, scrapes: int, full: bool) -> float:
    """Mean ms of one scrape, from another thread (as Prometheus would) while the loop idles."""
    from prometheus_client import CollectorRegistry

    async with aiotp.Runtime() as rt:
        await rt.start_pool("b", ADAPTER, profile="thread", size=2, heartbeat=None)
        for i in range(sessions):
            rt.sessions.create(f"s{i}")
        if full:
            exporter: Any = Metrics(rt)
            exporter.serve()
            url = exporter.url
        else:
            exporter = MetricsServer(CollectorRegistry())
            url = f"http://127.0.0.1:{exporter.port}/metrics"
        try:
            await asyncio.to_thread(_get, url)  # warm up
            t0 = time.perf_counter()
            for _ in range(scrapes):
                await asyncio.to_thread(_get, url)
            return (time.perf_counter() - t0) / scrapes * 1e3
        finally:
            exporter.close()


def main() -> None:
    args = parse_args(__doc__ or "")
    runs = args.runs or (5 if args.quick else 9)
    n_call = 10_000 if args.quick else 50_000
    n_cast = 50_000 if args.quick else 200_000
    n_exec = 1_000 if args.quick else 5_000
    rows: list[Row] = []
    for loop_name, factory in (("asyncio", loop_factory(False)), ("uvloop", loop_factory(True))):
        if loop_name == "uvloop" and factory is asyncio.new_event_loop:
            continue
        rows.append(
            alternate(
                f"call round trip with exporter [{loop_name}]",
                "us/call",
                "lower",
                lambda f=factory: _run(f, call_us(n_call, True)),  # type: ignore[misc]
                "without exporter",
                lambda f=factory: _run(f, call_us(n_call, False)),  # type: ignore[misc]
                runs,
                target="ratio <= 1.1",
            )
        )
        rows.append(
            alternate(
                f"cast throughput with exporter [{loop_name}]",
                "msgs/s",
                "higher",
                lambda f=factory: _run(f, cast_rate(n_cast, True)),  # type: ignore[misc]
                "without exporter",
                lambda f=factory: _run(f, cast_rate(n_cast, False)),  # type: ignore[misc]
                runs,
                target="ratio >= 0.9",
            )
        )
    factory = loop_factory(True)
    for profile in ("thread", "process"):
        rows.append(
            alternate(
                f"pool execute, {profile}, with exporter",
                "us/call",
                "lower",
                lambda p=profile: _run(factory, execute_us(n_exec, p, True)),  # type: ignore[misc]
                "without exporter",
                lambda p=profile: _run(factory, execute_us(n_exec, p, False)),  # type: ignore[misc]
                runs,
                target="ratio <= 1.1",
            )
        )
    n_sessions = 10_000
    scrapes = 5 if args.quick else 20
    rows.append(
        alternate(
            f"scrape, pool + {n_sessions:,} sessions",
            "ms/scrape",
            "lower",
            lambda: _run(factory, scrape_ms(n_sessions, scrapes, True)),
            "scrape of an empty registry",
            lambda: _run(factory, scrape_ms(n_sessions, scrapes, False)),
            runs,
        )
    )
    emit(rows, args.json)


if __name__ == "__main__":
    main()
