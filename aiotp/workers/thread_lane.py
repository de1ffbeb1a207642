"""A thread worker's execution lane: `n` daemon threads taking jobs from one queue.

Why our own threads rather than a ThreadPoolExecutor: a stuck tool cannot be interrupted in
Python, so a hung thread worker is retired and its busy threads abandoned (counted by
`abandoned_threads()`); executor threads are joined at interpreter exit, so one abandoned
executor thread would hang the whole program on exit; daemon threads do not.

A job's outcome reaches the loop in one callback (`_finish`): its ticket ends before its caller
wakes, so a caller never sees its own finished request still holding the worker. Exceptions are
described in the tool's thread (`describe_failure`), where the traceback is, and because some
(StopIteration) cannot be set into a future at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

from aiotp.runtime.errors import CallTimeout
from aiotp.workers.invoke import ToolFailure, describe_failure
from aiotp.workers.ticket import Ticket

__all__ = ["Lane", "abandoned_threads", "count_abandoned", "expire", "watch"]

_abandoned_total = 0
_abandoned_lock = threading.Lock()
_STOP = object()


def abandoned_threads() -> int:
    """How many threads of retired (hung) thread workers were left behind in this process."""
    return _abandoned_total


def count_abandoned(n: int) -> None:
    global _abandoned_total
    with _abandoned_lock:
        _abandoned_total += n


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _finish(
    fut: asyncio.Future[Any],
    ok: bool,
    value: Any,
    ticket: Ticket | None,
    done: Callable[[Ticket], None] | None,
) -> None:
    """On the loop, once a lane job returned: the ticket ends before the caller wakes, so the
    caller never sees its own finished request still holding the worker."""
    if ticket is not None and done is not None:
        done(ticket)
    _settle(fut, ok, value)


async def watch(task: asyncio.Future[Any]) -> None:
    """The job that tracks an async tool on the runtime's scheduler: shutdown cancels it, and
    cancelling this await cancels the tool. Its outcome goes to the caller, not to the log."""
    with contextlib.suppress(BaseException):
        await task


def expire(fut: asyncio.Future[Any], what: str, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(CallTimeout(f"{what} got no answer within {timeout} s"))


class Lane:
    """`n` daemon threads taking jobs from one queue."""

    def __init__(self, n: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.busy = 0
        self._busy_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}/{i}", daemon=True) for i in range(n)
        ]
        for t in self._threads:
            t.start()

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[Any],
        fn: Callable[[], Any],
        ticket: Ticket | None = None,
        done: Callable[[Ticket], None] | None = None,
    ) -> None:
        self._jobs.put((loop, fut, fn, ticket, done))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            loop, fut, fn, ticket, done = job
            if ticket is not None and ticket.cancelled:
                # Its caller left before it started: it never runs.
                value, ok = ToolFailure("cancelled", "Cancelled", "the caller left"), False
            else:
                with self._busy_lock:
                    self.busy += 1
                try:
                    value, ok = fn(), True
                except BaseException as exc:
                    # Described here, in the tool's thread, where its traceback is; and some
                    # exceptions (StopIteration) cannot be set into a future at all.
                    value, ok = describe_failure(exc), False
                finally:
                    with self._busy_lock:
                        self.busy -= 1
            # RuntimeError: the loop is closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_finish, fut, ok, value, ticket, done)

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(_STOP)


