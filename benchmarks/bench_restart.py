"""Restart after a crash: from a child's crash to its replacement handling a message.

aiotp: a permanent child under a one_for_one Supervisor crashes in handle_call; we time from the
crash to the first successful call on the replacement (found via which_children).
Floor: a bare task that raises; the "supervisor" catches the exception and spawns a new task,
which answers one message over a Future. Target ratio <= 3x.
Second row: a process worker SIGKILLed -> replacement ready and serving, vs starting a bare child
process that answers one message (ProcessPoolExecutor rebuilt after BrokenProcessPool as a peer).

    python benchmarks/bench_restart.py [--json] [--quick]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import Row, alternate, emit, parse_args

import aiotp
from aiotp.runtime.loop import loop_factory

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)


BORN: list[asyncio.Future[aiotp.ActorRef]] = []


class Child(aiotp.Actor):
    async def init(self) -> None:
        if BORN and not BORN[-1].done():
            BORN[-1].set_result(self.ref)  # tells the benchmark the replacement is up

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        if msg == "crash":
            raise RuntimeError("crash")
        return msg


def _run(factory: Callable[[], asyncio.AbstractEventLoop], coro: Any) -> float:
    with asyncio.Runner(loop_factory=factory) as runner:
        return float(runner.run(coro))


async def aiotp_restart(n: int) -> float:
    import logging

    logging.getLogger("aiotp").setLevel(logging.CRITICAL)  # crash reports are not the subject
    async with aiotp.Runtime() as rt:
        sup = await rt.spawn(aiotp.Supervisor, [aiotp.ChildSpec("c", Child)], max_restarts=n + 10)
        total = 0.0
        loop = asyncio.get_running_loop()
        ref = (await sup.which_children())[0].ref
        for _ in range(n):
            assert ref is not None
            BORN.append(loop.create_future())
            t0 = time.perf_counter()
            with contextlib.suppress(RuntimeError):
                await ref.call("crash")
            ref = await BORN[-1]
            await ref.call("ping")
            total += time.perf_counter() - t0
        BORN.clear()
        return total / n * 1e6


async def bare_task_restart(n: int) -> float:
    loop = asyncio.get_running_loop()

    async def child(inbox: asyncio.Queue[tuple[str, asyncio.Future[Any]]]) -> None:
        while True:
            msg, fut = await inbox.get()
            if msg == "crash":
                fut.set_exception(RuntimeError("crash"))
                raise RuntimeError("crash")
            fut.set_result(msg)

    total = 0.0
    inbox: asyncio.Queue[tuple[str, asyncio.Future[Any]]] = asyncio.Queue()
    task = asyncio.create_task(child(inbox))
    for _ in range(n):
        t0 = time.perf_counter()
        fut = loop.create_future()
        inbox.put_nowait(("crash", fut))
        with contextlib.suppress(RuntimeError):
            await task
        fut.exception()
        inbox = asyncio.Queue()
        task = asyncio.create_task(child(inbox))  # the "restart"
        fut = loop.create_future()
        inbox.put_nowait(("ping", fut))
        await fut
        total += time.perf_counter() - t0
    task.cancel()
    return total / n * 1e6


async def aiotp_process_restart(n: int) -> float:
    async with aiotp.Runtime() as rt:
        await rt.start_pool("r", "echo_adapter:Echo", profile="process", size=1, heartbeat=None)
        total = 0.0
        for _ in range(n):
            old = rt.pool_stats("r").workers[0].pid
            assert old is not None
            t0 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            while True:
                workers = rt.pool_stats("r").workers
                if workers and workers[0].pid != old:
                    break
                await asyncio.sleep(0)
            await rt.execute("r", "echo", {"value": 1})
            total += time.perf_counter() - t0
        return total / n * 1e3


def ppe_rebuild(n: int) -> Callable[[], float]:
    def bench() -> float:
        total = 0.0
        ex = concurrent.futures.ProcessPoolExecutor(1)
        ex.submit(abs, 1).result()
        for _ in range(n):
            pid = next(iter(ex._processes))  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(concurrent.futures.process.BrokenProcessPool):
                ex.submit(abs, 1).result()
            ex.shutdown(wait=False)
            ex = concurrent.futures.ProcessPoolExecutor(1)
            ex.submit(abs, 1).result()
            total += time.perf_counter() - t0
        ex.shutdown()
        return total / n * 1e3

    return bench


def main() -> None:
    args = parse_args(__doc__ or "")
    runs = args.runs or 5
    n = 200 if args.quick else 1000
    rows: list[Row] = []
    for loop_name, factory in (("asyncio", loop_factory(False)), ("uvloop", loop_factory(True))):
        rows.append(
            alternate(
                f"crash -> replacement handles a message [{loop_name}]",
                "us",
                "lower",
                lambda f=factory: _run(f, aiotp_restart(n)),  # type: ignore[misc]
                "bare task re-spawned after catching the exception",
                lambda f=factory: _run(f, bare_task_restart(n)),  # type: ignore[misc]
                runs,
                target="ratio <= 3",
            )
        )
    pn = 10 if args.quick else 30
    rows.append(
        alternate(
            "process worker SIGKILL -> replacement serving",
            "ms",
            "lower",
            lambda: _run(loop_factory(None), aiotp_process_restart(pn)),
            "ProcessPoolExecutor rebuilt after BrokenProcessPool",
            ppe_rebuild(pn),
            3 if args.quick else runs,
        )
    )
    emit(rows, args.json)


if __name__ == "__main__":
    main()
