"""Thread workers: an adapter served in this process by a few daemon threads.

A thread worker is an adapter instance plus ``threads_per_worker`` daemon threads fed from one
queue (its execution lane). Sync tools and generators run on those threads; async tools run on
the runtime's loop. A non-thread-safe adapter gets a capacity of 1 (the dispatcher never sends it
two requests at once) and a lock as a safety net.

Why our own threads rather than a ThreadPoolExecutor: a stuck tool cannot be interrupted in
Python, so a hung thread worker is *retired*: its callers get `WorkerCrashed` at once, its threads
are abandoned (counted by `abandoned_threads()`), and a fresh worker takes its place. Executor
threads are joined at interpreter exit, so one abandoned executor thread would hang the whole
program on exit; daemon threads do not.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiotp.runtime import telemetry
from aiotp.runtime.errors import CallTimeout
from aiotp.workers import streaming
from aiotp.workers.adapter import THREAD_UNSAFE_MODULES, Adapter, load_adapter
from aiotp.workers.errors import ToolError, UnknownTool, WorkerCrashed, WorkerStartError
from aiotp.workers.invoke import Toolbox, ToolFailure, describe_failure
from aiotp.workers.thread_lane import Lane, abandoned_threads, count_abandoned, expire, watch
from aiotp.workers.ticket import Ticket

__all__ = ["ThreadWorker", "abandoned_threads", "start_thread_worker"]

_log = logging.getLogger("aiotp.workers")


_warned_once: set[str] = set()


def _safety_warning(message: str, worker_id: str, kind: str) -> None:
    """Logged once per kind and adapter message, and emitted as telemetry."""
    if message in _warned_once:
        return
    _warned_once.add(message)
    _log.warning("%s", message)
    telemetry.execute(
        ("aiotp", "pool", "safety", "warning"),
        {"count": 1},
        {"worker_id": worker_id, "kind": kind, "message": message},
    )


async def _contained(fn: Any, args: dict[str, Any]) -> Any:
    """Run an async tool so that what it raises stays the caller's: asyncio lets a task's
    KeyboardInterrupt or SystemExit escape the event loop, which would stop the runtime.
    The tool's coroutine is made here, so a task cancelled before it starts leaves none
    behind un-awaited."""
    try:
        return await fn(**args)
    except (KeyboardInterrupt, SystemExit) as exc:
        raise describe_failure(exc) from None


class ThreadWorker:
    """A worker handle for the thread profile (same interface as process workers)."""

    pid: int | None = None

    def __init__(
        self, adapter_cls: type[Adapter], worker_id: str, threads: int, jobs: Any = None
    ) -> None:
        self.worker_id = worker_id
        self.adapter_cls = adapter_cls
        self.threads = threads
        self.capacity = threads if adapter_cls.thread_safe else 1
        self.in_flight = 0
        self.requests = 0
        self.errors = 0
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[Any] = self._loop.create_future()
        self._lane = Lane(threads, f"aiotp-{worker_id}")
        self._pending: set[asyncio.Future[Any]] = set()
        # Requests the worker has not finished, whether or not their caller still waits.
        self._tickets: set[Ticket] = set()
        self._jobs = jobs  # the runtime's scheduler, for async tools (None: bare tasks)
        self._guard = threading.Lock()
        self._entered = 0
        self._warned = False
        self.toolbox: Toolbox | None = None

    def __repr__(self) -> str:
        return f"<ThreadWorker {self.worker_id} in_flight={self.in_flight}>"

    # -- lane plumbing --------------------------------------------------------------------
    def _submit(
        self, fn: Callable[[], Any], timeout: float | None, what: str, ticket: Ticket | None = None
    ) -> Any:
        if self.closed.done():
            raise WorkerCrashed(f"worker {self.worker_id} is gone", self.worker_id, delivered=False)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        if ticket is not None:
            self._tickets.add(ticket)
        self._lane.submit(self._loop, fut, fn, ticket, self._ticket_done)
        if timeout is not None:
            handle = self._loop.call_later(timeout, expire, fut, what, timeout)
            fut.add_done_callback(lambda _f: handle.cancel())
        return fut

    def _guarded(self, fn: Callable[..., Any], args: dict[str, Any]) -> Callable[[], Any]:
        if self.adapter_cls.thread_safe:
            return lambda: fn(**args)

        def serial() -> Any:
            if self.adapter_cls.safety_checks and not self._guard.acquire(blocking=False):
                self._warn_concurrent()
                self._guard.acquire()
            elif not self.adapter_cls.safety_checks:
                self._guard.acquire()
            try:
                return fn(**args)
            finally:
                self._guard.release()

        return serial

    def _warn_concurrent(self) -> None:
        if not self._warned:
            self._warned = True
            _safety_warning(
                f"adapter {self.adapter_cls.__name__} is not thread_safe but was entered "
                f"concurrently on worker {self.worker_id}; calls are serialised",
                self.worker_id,
                "concurrent_entry",
            )

    def _check_unsafe_imports(self) -> None:
        loaded = [m for m in THREAD_UNSAFE_MODULES if m in sys.modules]
        if loaded:
            _safety_warning(
                f"threaded adapter {self.adapter_cls.__name__} runs with {', '.join(loaded)} "
                "loaded, documented as unsafe to share between threads: guard its objects with "
                "self.lock or keep them in self.thread_local",
                self.worker_id,
                "unsafe_module",
            )

    # -- the handle interface ---------------------------------------------------------------
    async def setup(self, timeout: float) -> None:
        def build() -> Toolbox:
            box = Toolbox(self.adapter_cls)
            box.adapter.setup()
            return box

        try:
            self.toolbox = await self._submit(build, timeout, f"setup of {self.worker_id}")
            if self.adapter_cls.safety_checks and self.adapter_cls.thread_safe and self.threads > 1:
                self._check_unsafe_imports()
        except asyncio.CancelledError:
            self.kill()  # the pool gave up on this start: leave no threads serving
            raise
        except Exception as exc:
            self.kill()
            what = str(exc) if isinstance(exc, ToolFailure) else f"{type(exc).__name__}: {exc}"
            error = WorkerStartError(
                f"worker {self.worker_id} ({self.adapter_cls.__name__}) failed in setup: {what}",
                self.worker_id,
            )
            if isinstance(exc, ToolFailure):
                # The setup's own traceback, as text (as a process worker's comes): the
                # ToolFailure carrying it has none worth chaining.
                error.stderr = exc.tb
                raise error from None
            raise error from exc

    def _lookup(self, tool: str) -> tuple[Any, str]:
        assert self.toolbox is not None
        try:
            return self.toolbox.lookup(tool)
        except ToolFailure:
            raise UnknownTool(tool, self.toolbox.names) from None

    def _bind(self, tool: str, args: dict[str, Any], session: list[Any] | None) -> dict[str, Any]:
        assert self.toolbox is not None
        try:
            return self.toolbox.bind(tool, args, session)
        except ToolFailure as failure:
            raise ToolError(failure.type_name, failure.message) from None

    @property
    def idempotent(self) -> frozenset[str]:
        return self.toolbox.idempotent if self.toolbox is not None else frozenset()

    def drop_session(self, session_id: str) -> None:
        """The session ended or moved to another worker: forget its state."""
        if self.toolbox is not None:
            self.toolbox.sessions.drop(session_id)

    def _ticket_done(self, ticket: Ticket) -> None:
        self._tickets.discard(ticket)
        ticket.end()

    @property
    def busy(self) -> int:
        """Requests the worker is really running, including those whose caller left."""
        return len(self._tickets)

    async def request(
        self,
        tool: str,
        args: dict[str, Any],
        timeout: float | None,
        ticket: Ticket | None = None,
        session: list[Any] | None = None,
    ) -> Any:
        """Run a tool. ``ticket`` (if given) ends when the worker has really finished with the
        request, which may be after this coroutine raised `CallTimeout` or was cancelled.
        ``session`` is ``[session_id, settings]`` for a call made with ``session=``."""
        self.in_flight += 1
        self.requests += 1
        try:
            fn, kind = self._lookup(tool)
            if session is not None or tool in self.toolbox.sessioned:  # type: ignore[union-attr]
                args = self._bind(tool, args, session)
            if kind == "async":
                return await self._run_async(fn, args, timeout, ticket)
            if kind in ("gen", "agen"):
                return [item async for item in self.stream(tool, args, timeout)]
            return await self._submit(
                self._guarded(fn, args), timeout, f"{tool} on {self.worker_id}", ticket
            )
        except (CallTimeout, WorkerCrashed, UnknownTool, ToolError):
            self.errors += 1
            raise
        except Exception as exc:
            self.errors += 1
            failure = describe_failure(exc)
            raise ToolError(failure.type_name, failure.message, failure.tb) from None
        finally:
            self.in_flight -= 1
            if ticket is not None and ticket.running:
                if ticket not in self._tickets or self.closed.done():
                    self._ticket_done(ticket)  # it never reached the lane, or nothing runs now
                else:
                    ticket.cancelled = True  # not started yet: the lane skips it

    async def _run_async(
        self, fn: Any, args: dict[str, Any], timeout: float | None, ticket: Ticket | None = None
    ) -> Any:
        task = self._loop.create_task(_contained(fn, args))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        if ticket is not None:
            self._tickets.add(ticket)
            task.add_done_callback(lambda _t: self._ticket_done(ticket))
        if self._jobs is not None:
            await self._jobs.spawn(watch(task), name=f"async tool on {self.worker_id}")
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            raise CallTimeout(
                f"async tool on {self.worker_id} took longer than {timeout} s"
            ) from None
        except asyncio.CancelledError:
            if self.closed.done():
                raise WorkerCrashed(
                    f"worker {self.worker_id} was retired", self.worker_id
                ) from None
            task.cancel()
            raise

    def stream(
        self,
        tool: str,
        args: dict[str, Any],
        timeout: float | None,
        ticket: Ticket | None = None,
        session: list[Any] | None = None,
    ) -> AsyncIterator[Any]:
        """Items of a generator tool, at most a window ahead of the caller (see streaming.py).
        ``ticket`` ends once the producer has really stopped (after the caller, if it left)."""
        try:
            fn, kind = self._lookup(tool)
            if self.closed.done():
                raise WorkerCrashed(
                    f"worker {self.worker_id} is gone", self.worker_id, delivered=False
                )
            if kind not in ("gen", "agen"):
                return streaming.one(self.request(tool, args, timeout, ticket, session))
            if session is not None or tool in self.toolbox.sessioned:  # type: ignore[union-attr]
                args = self._bind(tool, args, session)
        except BaseException:
            if ticket is not None:
                ticket.end()  # nothing started
            raise
        ended = None
        if ticket is not None:
            self._tickets.add(ticket)  # kill() ends it: a retired worker runs nothing for us
            ended = lambda: self._ticket_done(ticket)  # noqa: E731
        crashed: asyncio.Future[Any] = self._loop.create_future()
        self._pending.add(crashed)  # kill() fails it, and with it the stream, at once
        crashed.add_done_callback(self._pending.discard)
        self.in_flight += 1

        def finished() -> None:
            self.in_flight -= 1

        def submit(job: Callable[[], None]) -> None:
            self._lane.submit(self._loop, self._loop.create_future(), job)

        return streaming.start_local(
            fn,
            kind,
            args,
            loop=self._loop,
            what=f"stream {tool} on {self.worker_id}",
            timeout=timeout,
            submit=submit,
            crashed=crashed,
            finished=finished,
            ended=ended,
        )

    async def ping(self, timeout: float) -> float:
        started = self._loop.time()
        await self._submit(lambda: None, timeout, f"ping of {self.worker_id}")
        return self._loop.time() - started

    async def stop(self, grace: float) -> None:
        if self.closed.done():
            return
        deadline = self._loop.time() + grace
        while (self.in_flight or self._tickets) and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self.in_flight or self._tickets:
            self.kill()
            return
        if self.toolbox is not None:
            adapter = self.toolbox.adapter
            try:
                await self._submit(
                    adapter.teardown, max(deadline - self._loop.time(), 0.01), "teardown"
                )
            except Exception:
                _log.exception("teardown of worker %s failed", self.worker_id)
        self._lane.close()
        if not self.closed.done():
            self.closed.set_result("stopped")

    def kill(self) -> None:
        """Retire the worker now: callers fail with WorkerCrashed, busy threads are abandoned."""
        if self.closed.done():
            return
        if self._lane.busy:
            count_abandoned(self._lane.busy)
        self._lane.close()
        for fut in list(self._pending):
            if not fut.done():
                if isinstance(fut, asyncio.Task):
                    fut.cancel()
                else:
                    fut.set_exception(
                        WorkerCrashed(f"worker {self.worker_id} was retired", self.worker_id)
                    )
        for ticket in list(self._tickets):
            self._ticket_done(ticket)  # the worker is gone: nothing of it runs for us any more
        self.closed.set_result("killed")

    def statistics(self) -> dict[str, int]:
        return {"requests": self.requests, "errors": self.errors, "in_flight": self.in_flight}


async def start_thread_worker(
    adapter: str | type,
    *,
    worker_id: str,
    threads_per_worker: int = 1,
    start_timeout: float = 30.0,
    jobs: Any = None,
    **_options: Any,
) -> ThreadWorker:
    try:
        cls = load_adapter(adapter)
    except Exception as exc:
        raise WorkerStartError(
            f"worker {worker_id}: cannot load adapter {adapter!r}: {type(exc).__name__}: {exc}",
            worker_id,
        ) from exc
    worker = ThreadWorker(cls, worker_id, threads_per_worker, jobs)
    await worker.setup(start_timeout)
    return worker
