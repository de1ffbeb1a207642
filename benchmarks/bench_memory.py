"""Memory per idle actor, aiotp vs a bare task blocked on its own asyncio.Queue, and vs pykka.

Counted with tracemalloc (every Python allocation made while the actors are created and parked),
divided by the number of actors. Target: <= 2 KiB per idle aiotp actor.

    python benchmarks/bench_memory.py [--json] [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

from harness import Row, alternate, emit, parse_args

import aiotp
from aiotp.runtime.loop import loop_factory


def _measure(factory: Callable[[], asyncio.AbstractEventLoop], make: Any) -> float:
    async def bench() -> float:
        return float(await make())

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(bench())


def aiotp_actors(n: int) -> Callable[[], Any]:
    async def make() -> float:
        async with aiotp.Runtime() as rt:
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            refs = [await rt.spawn(aiotp.Actor) for _ in range(n)]
            await asyncio.sleep(0)  # every actor parked on its mailbox
            per_actor = (tracemalloc.get_traced_memory()[0] - before) / n
            tracemalloc.stop()
            for ref in refs:
                rt.exit(ref, "kill")  # fast teardown; shutdown order is not measured here
            await asyncio.sleep(0)
            return per_actor

    return make


def bare_tasks(n: int) -> Callable[[], Any]:
    async def make() -> float:
        async def idle(q: asyncio.Queue[Any]) -> None:
            await q.get()

        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        queues: list[asyncio.Queue[Any]] = []
        tasks = []
        for _ in range(n):
            q: asyncio.Queue[Any] = asyncio.Queue()
            queues.append(q)
            tasks.append(asyncio.create_task(idle(q)))
        await asyncio.sleep(0)
        per_task = (tracemalloc.get_traced_memory()[0] - before) / n
        tracemalloc.stop()
        for q in queues:
            q.put_nowait(None)
        await asyncio.gather(*tasks)
        return per_task

    return make


def pykka_actors(n: int) -> Callable[[], float]:
    import pykka

    class Idle(pykka.ThreadingActor):  # type: ignore[misc]
        pass

    def measure() -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        refs = [Idle.start() for _ in range(n)]
        per_actor = (tracemalloc.get_traced_memory()[0] - before) / n
        tracemalloc.stop()
        for ref in refs:
            ref.stop()
        return per_actor

    return measure


def main() -> None:
    args = parse_args(__doc__ or "")
    runs = args.runs or 5
    n = 20_000 if args.quick else 100_000
    rows: list[Row] = []
    for loop_name, factory in (("asyncio", loop_factory(False)), ("uvloop", loop_factory(True))):
        rows.append(
            alternate(
                f"idle actor memory, {n} actors [{loop_name}]",
                "bytes/actor",
                "lower",
                lambda f=factory: _measure(f, aiotp_actors(n)),  # type: ignore[misc]
                "bare task blocked on its own asyncio.Queue",
                lambda f=factory: _measure(f, bare_tasks(n)),  # type: ignore[misc]
                runs,
                target="aiotp <= 2048 bytes",
            )
        )
    rows.append(
        alternate(
            "idle actor memory vs pykka (1000 actors) [asyncio]",
            "bytes/actor",
            "lower",
            lambda: _measure(loop_factory(False), aiotp_actors(1000)),
            "pykka ThreadingActor (one thread each)",
            pykka_actors(1000),
            3 if args.quick else runs,
        )
    )
    emit(rows, args.json)


if __name__ == "__main__":
    main()
