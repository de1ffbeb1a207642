"""Streams of items from generator tools, caller's side: one implementation for both profiles.

`Stream` is what ``rt.stream`` iterates. The worker side feeds it items and then END or an
error (`push` on the loop's thread, `push_threadsafe` from a lane thread), and the stream owns
everything the caller sees:

- each wait for an item is bounded by the call's ``timeout``: `CallTimeout` after it;
- whatever the tool raised arrives as `ToolError` (type name, message, remote traceback), a
  worker that died as `WorkerCrashed`;
- credit goes back to the producer every ``CREDIT_BATCH`` items taken (see credit.py), so the
  producer is never more than ``WINDOW`` items ahead: a caller that stops reading pauses the tool,
  and a fast one pays one credit message per 32 items;
- leaving early (break, an exception in the loop body, cancellation, a timeout) stops the
  producer at once: the generator is closed in the worker (its ``finally`` runs), the worker is
  free again.

The thread profile's producers live here too: `start_local` runs a generator on lane threads or
an async generator as a task on the loop. The worker-process producer is host_stream.py.

Example (what api.stream does)::

    items = handle.stream("count", {"n": 3}, timeout=5.0)
    try:
        async for item in items:
            ...
    finally:
        await items.aclose()

Not for several consumers: one task iterates a stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiotp.runtime.errors import CallTimeout
from aiotp.workers import protocol as p
from aiotp.workers.credit import CREDIT_BATCH, WINDOW
from aiotp.workers.errors import ToolError, WorkerCrashed
from aiotp.workers.invoke import describe_failure

__all__ = ["Stream", "one", "start_local", "tool_error"]

ITEM, END, ERROR = p.ITEM, p.END, p.ERROR


def tool_error(exc: BaseException) -> ToolError:
    """What the caller gets for anything a tool raised (in the thread that saw it raise)."""
    failure = describe_failure(exc)
    return ToolError(failure.type_name, failure.message, failure.tb)


class Stream:
    """The caller's end of one stream (see the module docstring).

    ``grant(n)`` gives the producer n more credits; ``finish(completed)`` is called exactly once
    when the stream is over: completed=False means the caller left early and the producer must
    be stopped.
    """

    __slots__ = (
        "_finish",
        "_grant",
        "_items",
        "_loop",
        "_open",
        "_taken",
        "_timeout",
        "_waiter",
        "_wake_due",
        "what",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        what: str,
        timeout: float | None,
        grant: Callable[[int], None],
        finish: Callable[[bool], None],
    ) -> None:
        self._loop = loop
        self.what = what
        self._timeout = timeout
        self._grant = grant
        self._finish = finish
        # A deque: appends from a lane thread and pops on the loop need no lock.
        self._items: collections.deque[tuple[int, Any]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wake_due = False
        self._taken = 0
        self._open = True

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<Stream {self.what} {state} buffered={len(self._items)}>"

    # -- fed by the producer ----------------------------------------------------------------
    def push(self, kind: int, value: Any = None) -> None:
        """An ITEM, END or ERROR (value: the exception), on the loop's thread."""
        if not self._open:
            return
        self._items.append((kind, value))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push_threadsafe(self, kind: int, value: Any = None) -> None:
        """`push` from another thread. The loop is woken only when the caller waits, and once
        for a burst of items, not once per item (each wake-up is a write to the loop's pipe)."""
        if not self._open:
            return
        self._items.append((kind, value))
        if self._waiter is not None and not self._wake_due:
            self._wake_due = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_due = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the caller -----------------------------------------------------------------
    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Any:
        items = self._items
        while not items:  # a loop: a wake-up meant for an earlier wait may come late
            if not self._open:
                raise StopAsyncIteration
            await self._wait()
        kind, value = items.popleft()
        if kind == ITEM:
            self._taken += 1
            if self._taken >= CREDIT_BATCH:
                self._taken = 0
                self._grant(CREDIT_BATCH)
            return value
        self._close(completed=True)
        if kind == END:
            raise StopAsyncIteration
        raise value

    async def aclose(self) -> None:
        """Leave the stream: the producer is stopped if it has not finished."""
        self._close(completed=False)

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        if self._items:  # a lane thread pushed after our check: no need to sleep
            self._waiter = None
            return
        timer = (
            None
            if self._timeout is None
            else self._loop.call_later(self._timeout, self._expire, waiter)
        )
        try:
            await waiter
        except BaseException:
            # A timeout or a cancellation of the caller: either way nobody reads any more.
            self._close(completed=False)
            raise
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(
                CallTimeout(f"{self.what} got no item within {self._timeout} s")
            )

    def _close(self, completed: bool) -> None:
        if not self._open:
            return
        self._open = False
        self._items.clear()
        self._finish(completed)


async def one(result: Awaitable[Any]) -> AsyncIterator[Any]:
    """A stream of a tool that is not a generator: its result, as the only item."""
    yield await result


# -- the thread profile's producers ---------------------------------------------------------
_RUNNING, _PARKED, _DONE = range(3)


class _ThreadProducer:
    """A generator tool run on lane threads, at most WINDOW items ahead of its stream.

    Out of credit it parks: its job returns and the lane thread is free (for pings, for other
    requests); the next credit submits it again. So a paused stream holds no thread, and the
    heartbeat never mistakes a slow reader for a hung worker. The generator may thus resume on
    another lane thread, which a generator does not mind (thread-locals read inside it might).
    Only the thread running a job touches the generator: ``stop`` closes a parked one in a job.
    """

    def __init__(
        self,
        make: Callable[[], Any],
        stream: Stream,
        submit: Callable[[Callable[[], None]], None],
        ended: Callable[[], None] | None = None,
    ) -> None:
        self._make = make
        self._ended = ended
        self._gen: Any = None
        self._stream = stream
        self._submit = submit
        self._lock = threading.Lock()
        self._credit = WINDOW
        self._state = _RUNNING
        self._stopping = False
        submit(self._run)

    def grant(self, n: int) -> None:
        with self._lock:
            self._credit += n
            resume = self._state == _PARKED
            if resume:
                self._state = _RUNNING
        if resume:
            self._submit(self._run)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            parked = self._state == _PARKED
            if parked:
                self._state = _RUNNING  # the job below owns the generator now
        if parked:
            self._submit(self._run)

    def _run(self) -> None:
        try:
            self._produce()
        finally:
            if self._state == _DONE and self._ended is not None:
                # On the loop, once: the worker has really finished with this stream.
                ended, self._ended = self._ended, None
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    self._stream._loop.call_soon_threadsafe(ended)

    def _produce(self) -> None:
        push = self._stream.push_threadsafe
        try:
            if self._gen is None:
                self._gen = self._make()
            step = self._gen.__next__
            while True:
                with self._lock:
                    if self._stopping:
                        break
                    if self._credit <= 0:
                        self._state = _PARKED
                        return
                    credit, self._credit = self._credit, 0
                for _ in range(credit):
                    if self._stopping:
                        break
                    try:
                        item = step()
                    except StopIteration:
                        self._state = _DONE
                        push(END)
                        return
                    push(ITEM, item)
        except BaseException as exc:  # a tool's KeyboardInterrupt too: it is the caller's
            self._state = _DONE
            push(ERROR, tool_error(exc))
            return
        self._state = _DONE
        if self._gen is not None:
            with contextlib.suppress(BaseException):  # its finally failing is nobody's news
                self._gen.close()


class _TaskProducer:
    """An async generator tool run as a task on the runtime's loop, at most WINDOW items ahead.

    Out of credit it awaits a future that `grant` resolves; `stop` cancels the task, which
    closes the generator (its ``finally`` runs). A CancelledError the tool raises by itself is
    an error like any other; our own cancellation is not reported.
    """

    def __init__(
        self,
        make: Callable[[], Any],
        stream: Stream,
        loop: asyncio.AbstractEventLoop,
        ended: Callable[[], None] | None = None,
    ) -> None:
        self._make = make
        self._stream = stream
        self._loop = loop
        self._credit = WINDOW
        self._more: asyncio.Future[None] | None = None
        self._stopping = False
        self.task = loop.create_task(self._run(), name=stream.what)
        if ended is not None:
            self.task.add_done_callback(lambda _t: ended())

    def grant(self, n: int) -> None:
        self._credit += n
        if self._more is not None and not self._more.done():
            self._more.set_result(None)

    def stop(self) -> None:
        self._stopping = True
        self.task.cancel()

    async def _run(self) -> None:
        push = self._stream.push
        agen: Any = None
        try:
            agen = self._make()
            while True:
                while self._credit <= 0:
                    self._more = self._loop.create_future()
                    await self._more
                self._credit -= 1
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    push(END)
                    return
                push(ITEM, item)
        except asyncio.CancelledError:
            if not self._stopping:
                push(ERROR, tool_error(asyncio.CancelledError("the tool raised CancelledError")))
        except BaseException as exc:  # a tool's KeyboardInterrupt too: raised into the loop,
            push(ERROR, tool_error(exc))  # it would stop the whole runtime
        finally:
            if agen is not None:
                with contextlib.suppress(BaseException):
                    await agen.aclose()


def start_local(
    fn: Any,
    kind: str,
    args: dict[str, Any],
    *,
    loop: asyncio.AbstractEventLoop,
    what: str,
    timeout: float | None,
    submit: Callable[[Callable[[], None]], None],
    crashed: asyncio.Future[Any],
    finished: Callable[[], None],
    ended: Callable[[], None] | None = None,
) -> Stream:
    """Start a generator ("gen", on lane threads via `submit`) or async generator ("agen", a task
    on `loop`) tool of a thread worker, and return its stream.

    `crashed` is a future the worker fails (with `WorkerCrashed`) if it is retired: the stream
    then fails at once too. `finished` runs once the stream is over, whichever way; `ended`
    runs (on the loop) once the producer has really stopped, which may be later when the
    caller left early.
    """
    producer: _ThreadProducer | _TaskProducer

    def finish(completed: bool) -> None:
        crashed.cancel()
        if not completed:
            producer.stop()
        finished()

    def on_crash(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        stream.push(ERROR, exc if exc is not None else WorkerCrashed(f"{what}: worker gone"))
        producer.stop()

    stream = Stream(loop, what, timeout, lambda n: producer.grant(n), finish)
    make = lambda: fn(**args)  # noqa: E731 - called in the producer, where errors are caught
    if kind == "gen":
        producer = _ThreadProducer(make, stream, submit, ended)
    else:
        producer = _TaskProducer(make, stream, loop, ended)
    crashed.add_done_callback(on_crash)
    return stream
