"""Messaging: cast throughput and call round trip, aiotp vs its floor and vs pykka.

Floors (same loop, same process): two tasks over a bare asyncio.Queue for casts, and a
request/reply over a Queue plus a Future per request for calls. Peer: pykka ThreadingActor
ask/tell. Each row is measured on the default asyncio loop and on uvloop.

    python benchmarks/bench_messaging.py [--json] [--quick]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from harness import Row, alternate, emit, parse_args

import aiotp
from aiotp.runtime.loop import loop_factory

# The producer yields to the loop after this many casts, so producer and consumer interleave
# (1 = strict ping-pong, the worst case for batching mailboxes).
INTERLEAVE = 1


class Sink(aiotp.Actor):
    async def init(self) -> None:
        self.left = 0
        self.done: asyncio.Future[None] | None = None

    async def handle_cast(self, msg: Any) -> None:
        self.left -= 1
        if self.left == 0 and self.done is not None:
            self.done.set_result(None)

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        return msg


def _run(factory: Callable[[], asyncio.AbstractEventLoop], coro_fn: Callable[[], Any]) -> float:
    with asyncio.Runner(loop_factory=factory) as runner:
        return float(runner.run(coro_fn()))


def cast_aiotp(n: int) -> Callable[[], Any]:
    async def bench() -> float:
        async with aiotp.Runtime() as rt:
            ref = await rt.spawn(Sink)
            actor: Any = ref._actor
            actor.left = n
            actor.done = asyncio.get_running_loop().create_future()
            t0 = time.perf_counter()
            for i in range(n):
                await ref.cast(i)
                if i % INTERLEAVE == INTERLEAVE - 1:
                    await asyncio.sleep(0)  # interleave producer and consumer
            await actor.done
            return n / (time.perf_counter() - t0)

    return bench


def cast_queue(n: int) -> Callable[[], Any]:
    async def bench() -> float:
        q: asyncio.Queue[int] = asyncio.Queue()
        done = asyncio.get_running_loop().create_future()

        async def consumer() -> None:
            left = n
            while True:
                await q.get()
                left -= 1
                if left == 0:
                    done.set_result(None)
                    return

        task = asyncio.create_task(consumer())
        t0 = time.perf_counter()
        for i in range(n):
            await q.put(i)
            if i % INTERLEAVE == INTERLEAVE - 1:
                await asyncio.sleep(0)
        await done
        rate = n / (time.perf_counter() - t0)
        await task
        return rate

    return bench


def call_aiotp(n: int) -> Callable[[], Any]:
    async def bench() -> float:
        async with aiotp.Runtime() as rt:
            ref = await rt.spawn(Sink)
            t0 = time.perf_counter()
            for i in range(n):
                await ref.call(i)
            return (time.perf_counter() - t0) / n * 1e6

    return bench


def call_future_pingpong(n: int) -> Callable[[], Any]:
    async def bench() -> float:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue()

        async def server() -> None:
            while True:
                msg, fut = await q.get()
                if msg < 0:
                    return
                fut.set_result(msg)

        task = asyncio.create_task(server())
        t0 = time.perf_counter()
        for i in range(n):
            fut: asyncio.Future[int] = loop.create_future()
            q.put_nowait((i, fut))
            await fut
        elapsed = time.perf_counter() - t0
        q.put_nowait((-1, loop.create_future()))
        await task
        return elapsed / n * 1e6

    return bench


def pykka_ask(n: int) -> Callable[[], float]:
    import pykka

    class Echo(pykka.ThreadingActor):  # type: ignore[misc]
        def on_receive(self, message: Any) -> Any:
            return message

    def bench() -> float:
        ref = Echo.start()
        try:
            t0 = time.perf_counter()
            for i in range(n):
                ref.ask(i)
            return (time.perf_counter() - t0) / n * 1e6
        finally:
            ref.stop()

    return bench


def main() -> None:
    args = parse_args(__doc__ or "")
    runs = args.runs or (5 if args.quick else 9)
    n_cast = 50_000 if args.quick else 200_000
    n_call = 10_000 if args.quick else 50_000
    rows: list[Row] = []
    for loop_name, factory in (
        ("asyncio", loop_factory(False)),
        ("uvloop", loop_factory(True)),
    ):
        if loop_name == "uvloop" and factory is asyncio.new_event_loop:
            continue
        rows.append(
            alternate(
                f"cast throughput [{loop_name}]",
                "msgs/s",
                "higher",
                lambda f=factory: _run(f, cast_aiotp(n_cast)),  # type: ignore[misc]
                "two tasks over asyncio.Queue",
                lambda f=factory: _run(f, cast_queue(n_cast)),  # type: ignore[misc]
                runs,
                target="ratio >= 0.5",
            )
        )
        rows.append(
            alternate(
                f"call round trip [{loop_name}]",
                "us/call",
                "lower",
                lambda f=factory: _run(f, call_aiotp(n_call)),  # type: ignore[misc]
                "Queue + Future ping-pong",
                lambda f=factory: _run(f, call_future_pingpong(n_call)),  # type: ignore[misc]
                runs,
                target="ratio <= 2.0",
            )
        )
        rows.append(
            alternate(
                f"call round trip vs pykka ask [{loop_name}]",
                "us/call",
                "lower",
                lambda f=factory: _run(f, call_aiotp(n_call)),  # type: ignore[misc]
                "pykka ThreadingActor ask",
                pykka_ask(max(n_call // 5, 1000)),
                runs,
                target="ratio <= 0.2 (5x faster)",
            )
        )
    emit(rows, args.json)


if __name__ == "__main__":
    main()
