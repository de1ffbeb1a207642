"""Ray workers: aiotp's profile="ray" against a bare Ray actor doing the same work.

The floor is a plain Ray actor with an ``echo`` method, called from the same event loop with
the cheapest completion Ray offers: a callback on ``ref.future()`` that resolves an asyncio
future (what aiotp's handle does too; the idiomatic ``await actor.echo.remote(value)`` costs
more, an `asyncio.wrap_future` chain per call, and would flatter aiotp). aiotp adds, per call,
the msgpack frames (no pickle crosses), the dispatcher, tickets and timeouts, and the actor's
lane bookkeeping. One local Ray (2 CPUs, 127.0.0.1) serves both sides, alternating.

Rows:
- sequential round trip, one worker vs one bare actor (target <= 1.15x)
- pipelined: 64 calls in flight on one worker (``pipeline=64``, so the worker may hold them as
  the bare actor's queue does) vs 64 in flight on the bare actor; per call, lower is better

    python benchmarks/bench_ray.py [--json] [--quick]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness import Row, alternate, emit, parse_args

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when Ray is imported

import ray  # noqa: E402

import aiotp  # noqa: E402
from aiotp.runtime.loop import loop_factory  # noqa: E402

ADAPTER = "echo_adapter:Echo"
IN_FLIGHT = 64


class BareEcho:
    """The floor: the same work as echo_adapter.Echo.echo, as a plain Ray actor."""

    def echo(self, value: Any = None) -> Any:
        return value


def bare_call(actor: Any) -> Any:
    """``actor.echo.remote(value)``, awaited through a callback on its concurrent future."""
    loop = asyncio.get_running_loop()
    method = actor.echo

    def call(value: Any) -> asyncio.Future[Any]:
        fut = loop.create_future()

        def done(cf: Any) -> None:
            loop.call_soon_threadsafe(fut.set_result, cf.result())

        method.remote(value).future().add_done_callback(done)
        return fut

    return call


async def bare_sequential(actor: Any, n: int) -> float:
    call = bare_call(actor)
    started = time.perf_counter()
    for i in range(n):
        assert await call(i) == i
    return (time.perf_counter() - started) / n * 1e6


async def aiotp_sequential(rt: aiotp.Runtime, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        assert await rt.execute("seq", "echo", {"value": i}) == i
    return (time.perf_counter() - started) / n * 1e6


async def in_flight(call: Any, total: int) -> float:
    """`total` calls, IN_FLIGHT at a time (each lane starts its next call when one ends)."""
    per_lane = total // IN_FLIGHT

    async def lane(k: int) -> None:
        for i in range(per_lane):
            assert await call(k * per_lane + i) == k * per_lane + i

    started = time.perf_counter()
    await asyncio.gather(*(lane(k) for k in range(IN_FLIGHT)))
    return (time.perf_counter() - started) / (per_lane * IN_FLIGHT) * 1e6


async def bare_in_flight(actor: Any, total: int) -> float:
    return await in_flight(bare_call(actor), total)


def main() -> None:
    args = parse_args(__doc__ or "")
    runs = args.runs or (5 if args.quick else 9)
    n = 300 if args.quick else 2_000
    total = 1_280 if args.quick else 12_800
    factory = loop_factory(None)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        logging_level="ERROR",
    )
    rows: list[Row] = []
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            rt = aiotp.Runtime(name="bench-ray")
            runner.run(rt.__aenter__())
            try:
                runner.run(rt.start_pool("seq", ADAPTER, profile="ray", size=1))
                runner.run(
                    rt.start_pool("pipe", ADAPTER, profile="ray", size=1, pipeline=IN_FLIGHT)
                )
                bare = ray.remote(BareEcho).remote()
                runner.run(bare_sequential(bare, 50))  # warm both sides up
                runner.run(aiotp_sequential(rt, 50))

                def pooled(i: int) -> Any:
                    return rt.execute("pipe", "echo", {"value": i})

                rows.append(
                    alternate(
                        "ray profile execute, sequential",
                        "us/call",
                        "lower",
                        lambda: runner.run(aiotp_sequential(rt, n)),
                        "bare Ray actor call",
                        lambda: runner.run(bare_sequential(bare, n)),
                        runs,
                        target="<= 1.15",
                    )
                )
                rows.append(
                    alternate(
                        f"ray profile execute, {IN_FLIGHT} in flight, 1 worker",
                        "us/call",
                        "lower",
                        lambda: runner.run(in_flight(pooled, total)),
                        f"bare Ray actor, {IN_FLIGHT} calls in flight",
                        lambda: runner.run(bare_in_flight(bare, total)),
                        runs,
                    )
                )
                ray.kill(bare)
            finally:
                runner.run(rt.__aexit__(None, None, None))
    finally:
        ray.shutdown()
    emit(rows, args.json)


if __name__ == "__main__":
    main()
