"""Ray workers, caller's side: the small helpers of the handle (ray_worker.py).

Apart so that the handle's module stays readable: building a request frame, timing a caller
out, and moving Ray's answers (which complete on Ray's own threads) onto the runtime's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future as ConcurrentFuture
from typing import Any

from aiotp.runtime.errors import CallTimeout

__all__ = ["expire", "retrieve", "short", "wait", "when_done"]


def expire(waiter: asyncio.Future[Any], tool: str, worker_id: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(
            CallTimeout(f"{tool} on worker {worker_id} got no answer within {timeout} s")
        )


def when_done(ref: Any, callback: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Run `callback(concurrent_future)` when `ref` resolves: on `loop` when given (Ray calls
    back from its own thread), else in Ray's thread."""
    cf = ref.future()
    if loop is None:
        cf.add_done_callback(callback)
        return

    def back(done: ConcurrentFuture[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(callback, done)

    cf.add_done_callback(back)


async def wait(ref: Any, loop: asyncio.AbstractEventLoop) -> Any:
    return await asyncio.wrap_future(ref.future(), loop=loop)


def retrieve(cf: ConcurrentFuture[Any]) -> None:
    cf.exception()


def short(exc: BaseException | None) -> str:
    if exc is None:
        return "it ended"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
