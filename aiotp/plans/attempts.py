"""Running one plan step: its attempts, their timeouts, retries, outputs and trace entries.

The `Executor` (executor.py) decides when a step starts; this mixin runs it. Two ways, one
behaviour:

- The fast way, for an async local tool that takes no cap and no resource: the tool's own
  coroutine is the step's task, and a done callback does the bookkeeping. A plan of thousands
  of short async steps then costs little more per step than gathering the coroutines by hand.
- The general way, a coroutine per step: waits for its tool's cap and its resources, then runs
  the attempt (a sync tool in the thread pool, a pool tool through ``rt.execute``).
A fast attempt that fails and may be retried goes on the general way, after its backoff.

Either way, an attempt's timeout is a shared deadline (deadlines.py), a failed attempt of an
idempotent tool is retried up to ``max_retries`` times outside its locks, and every attempt
leaves one trace entry.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
from collections import deque
from collections.abc import Callable, Mapping
from time import perf_counter as clock  # traces: uvloop's loop.time() ticks in ms
from typing import Any

from aiotp.plans.deadlines import Deadlines
from aiotp.plans.locks import ResourceLocks
from aiotp.plans.results import StepResult, StepStatus
from aiotp.plans.spec import ToolSpec
from aiotp.plans.step import PlanStep

__all__ = ["Attempts", "Board"]


class Board:
    """One run's steps in flight: the running ones, and those that just ended (with the error
    that ended them, None when done), queued by their tasks' done callbacks so that the run
    handles each in O(1) rather than an `asyncio.wait` over every running step."""

    __slots__ = ("_wake", "artifacts", "finished", "running")

    def __init__(self, artifacts: dict[str, Any]) -> None:
        self.artifacts = artifacts
        self.running: dict[asyncio.Task[Any], str] = {}
        self.finished: deque[tuple[asyncio.Task[Any], BaseException | None]] = deque()
        self._wake: asyncio.Future[None] | None = None

    def end(self, task: asyncio.Task[Any], error: BaseException | None) -> None:
        self.finished.append((task, error))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def wait(self) -> None:
        """Until a step ends (at once if one already has)."""
        if not self.finished:
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake


class Attempts:
    """The step-running half of `Executor` (a mixin: the executor owns the state named here)."""

    max_retries: int
    default_timeout: float
    enable_tracing: bool
    runtime: Any
    session: str | None
    backoff: float
    max_backoff: float
    locks: ResourceLocks
    threads: int
    _caps: dict[Any, asyncio.Semaphore]
    _results: dict[str, StepResult]
    _trace: list[tuple[Any, ...]]
    _loop: asyncio.AbstractEventLoop
    _deadlines: Deadlines
    _started: float
    _pool: concurrent.futures.ThreadPoolExecutor | None
    _lingering: dict[asyncio.Task[Any], concurrent.futures.Future[Any]]
    _stopping: bool
    _pool_started: dict[asyncio.Task[Any], float]

    # -- starting a step -------------------------------------------------------------------
    def _launch(self, step: PlanStep, board: Board) -> None:
        """Start `step` as a task on `board`; when the step is over, the board hears of it."""
        spec = step.spec
        fast = spec.kind == "async" and spec.concurrency_cap is None and not spec.resources
        if fast and self._launch_fast(step, board):
            return
        self._launch_general(step, board, None)

    def _launch_general(self, step: PlanStep, board: Board, delay: float | None) -> None:
        def done(task: asyncio.Task[Any]) -> None:
            board.end(task, asyncio.CancelledError() if task.cancelled() else task.exception())

        task = self._loop.create_task(
            self._run_step(step, board.artifacts, delay), name=f"plan step {step.step_id}"
        )
        task.add_done_callback(done)
        board.running[task] = step.step_id

    def _launch_fast(self, step: PlanStep, board: Board) -> bool:
        spec = step.spec
        result = self._results[step.step_id]
        try:
            assert spec.fn is not None
            coro = spec.fn(**step.bind(board.artifacts))
        except Exception:
            return False  # the general way reports it as a failed attempt, with its trace
        loop = self._loop
        started = clock()
        result.attempts += 1
        result.status = StepStatus.RUNNING
        if result.start is None:
            result.start = started - self._started
        task = loop.create_task(coro, name=f"plan step {step.step_id}")
        token = object()
        timeout = spec.timeout if spec.timeout is not None else self.default_timeout
        slot = self._deadlines.arm(task, token, timeout)

        def done(task: asyncio.Task[Any]) -> None:
            self._deadlines.disarm(slot, task)
            if task.cancelled():
                if not self._deadlines.timed_out(token):
                    self._record(step, result, "cancelled", started, started, None)
                    board.end(task, asyncio.CancelledError())
                    return
                error: BaseException | None = _timed_out(spec, timeout)
            else:
                error = task.exception()
            if error is None:
                try:
                    outputs = _outputs(step, task.result())
                except Exception as exc:
                    error = exc
            if error is None:
                value = task.result()
                self._succeeded(step, result, value, outputs, board.artifacts, started, started)
                board.end(task, None)
                return
            self._failed_attempt(step, result, error, started, started)
            retry = spec.idempotent and result.attempts <= self.max_retries
            if retry and isinstance(error, Exception) and not self._stopping:
                del board.running[task]  # the step goes on, the general way
                self._launch_general(step, board, self._backoff(result.attempts))
                return
            result.status = StepStatus.FAILED
            result.error = error
            board.end(task, error)

        task.add_done_callback(done)
        board.running[task] = step.step_id
        return True

    # -- the general way -------------------------------------------------------------------
    async def _run_step(
        self, step: PlanStep, artifacts: dict[str, Any], delay: float | None = None
    ) -> None:
        spec = step.spec
        result = self._results[step.step_id]
        task = asyncio.current_task()
        assert task is not None
        while True:
            if delay is not None:
                result.status = StepStatus.WAITING
                # Retried outside its locks, so the backoff holds nothing anybody waits for.
                await asyncio.sleep(delay)
            result.attempts += 1
            result.status = StepStatus.WAITING
            asked = clock()
            release = await self._guard(spec)
            try:
                error = await self._attempt(step, result, artifacts, asked)
            finally:
                self._unguard(task, release)
            if error is None:
                return
            if task.cancelling() or self._stopping:
                # The run is stopping (a tool turned its cancellation into an error): no retry
                # may start after it.
                raise asyncio.CancelledError
            if not spec.idempotent or result.attempts > self.max_retries:
                result.status = StepStatus.FAILED
                result.error = error
                raise error
            delay = self._backoff(result.attempts)

    async def _guard(self, spec: ToolSpec) -> Callable[[], None] | None:
        """Take the step's cap slot, then all its resources; the function releasing both (None
        when it has neither). Cancel-safe: a cancelled wait leaves nothing taken."""
        if spec.concurrency_cap is None and not spec.resources:
            return None
        sem = self._cap(spec)
        if sem is not None:
            await sem.acquire()
        try:
            unlock = await self.locks.acquire(spec.reads, spec.writes) if spec.resources else None
        except BaseException:
            if sem is not None:
                sem.release()
            raise

        def release() -> None:
            if unlock is not None:
                unlock()
            if sem is not None:
                sem.release()

        return release

    def _unguard(self, task: asyncio.Task[Any], release: Callable[[], None] | None) -> None:
        """Release the step's cap and resources, unless a sync tool it started still runs in its
        thread (it timed out or was cancelled): then only once that thread has returned, so
        that no other writer touches the resource while it does."""
        running = self._lingering.pop(task, None)
        if release is None:
            return
        if running is None or running.done():
            release()
            return
        loop = self._loop

        def thread_ended(_future: concurrent.futures.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to release
                loop.call_soon_threadsafe(release)

        running.add_done_callback(thread_ended)

    def _backoff(self, attempts: int) -> float:
        return float(min(self.backoff * 2 ** (attempts - 1), self.max_backoff))

    async def _attempt(
        self, step: PlanStep, result: StepResult, artifacts: dict[str, Any], asked: float
    ) -> BaseException | None:
        """Run one attempt; None when it succeeded, its error otherwise (CancelledError
        propagates)."""
        started = clock()
        if result.start is None:
            result.start = started - self._started
        result.status = StepStatus.RUNNING
        try:
            value = await self._call(step.spec, step.bind(artifacts))
            outputs = _outputs(step, value)
        except asyncio.CancelledError:
            self._record(step, result, "cancelled", asked, started, None)
            raise
        except Exception as exc:
            self._failed_attempt(step, result, exc, asked, started)
            return exc
        except BaseException as exc:  # GeneratorExit and the like: traced, never retried
            self._failed_attempt(step, result, exc, asked, started)
            raise
        self._succeeded(step, result, value, outputs, artifacts, asked, started)
        return None

    def _cap(self, spec: ToolSpec) -> asyncio.Semaphore | None:
        """The semaphore of the step's tool (per run: see `Executor.execute_plan`)."""
        if spec.concurrency_cap is None:
            return None
        key: Any = (spec.pool, spec.pool_tool_name) if spec.kind == "pool" else id(spec)
        sem = self._caps.get(key)
        if sem is None:
            sem = self._caps[key] = asyncio.Semaphore(spec.concurrency_cap)
        return sem

    async def _call(self, spec: ToolSpec, args: Mapping[str, Any]) -> Any:
        timeout = spec.timeout if spec.timeout is not None else self.default_timeout
        if spec.kind == "pool":
            session = spec.session or self.session
            return await self.runtime.execute(
                spec.pool, spec.pool_tool_name, dict(args), timeout=timeout, session=session
            )
        assert spec.fn is not None
        task = asyncio.current_task()
        assert task is not None
        if spec.kind == "async":
            call: Any = spec.fn(**args)
        else:
            call = await self._thread_started(task, functools.partial(spec.fn, **args))
        token = object()
        cancelling = task.cancelling()
        slot = self._deadlines.arm(task, token, timeout)
        try:
            return await call
        except asyncio.CancelledError:
            if self._deadlines.timed_out(token) and task.uncancel() <= cancelling:
                raise _timed_out(spec, timeout) from None
            raise
        finally:
            self._deadlines.disarm(slot, task)

    async def _thread_started(
        self, task: asyncio.Task[Any], call: Callable[[], Any]
    ) -> asyncio.Future[Any]:
        """Submit a sync tool to the thread pool and wait until a thread runs it: its timeout
        counts from there, not from its wait for a free thread (as a step's wait for its
        locks does not count either). Its future is kept in ``_lingering`` so that the step's
        resources outlive the step when the thread does."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.threads, thread_name_prefix="aiotp-plan"
            )
        loop = self._loop
        began: asyncio.Future[None] = loop.create_future()

        def run() -> Any:
            loop.call_soon_threadsafe(_settle, began)
            return call()

        running = self._pool.submit(run)
        self._lingering[task] = running
        done = asyncio.wrap_future(running, loop=loop)
        try:
            await asyncio.wait({began, done}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            running.cancel()  # not started yet: it never will
            raise
        finally:
            if not began.done():
                began.cancel()
        return done

    # -- outcomes ----------------------------------------------------------------------------
    def _succeeded(
        self,
        step: PlanStep,
        result: StepResult,
        value: Any,
        outputs: dict[str, Any],
        artifacts: dict[str, Any],
        asked: float,
        started: float,
    ) -> None:
        self._record(step, result, "ok", asked, started, None)
        artifacts.update(outputs)
        result.result = value
        result.status = StepStatus.DONE
        result.duration = clock() - self._started - (result.start or 0.0)

    def _failed_attempt(
        self,
        step: PlanStep,
        result: StepResult,
        error: BaseException,
        asked: float,
        started: float,
    ) -> None:
        status = "timeout" if isinstance(error, TimeoutError) else "error"
        self._record(step, result, status, asked, started, error)
        result.duration = clock() - self._started - (result.start or 0.0)

    def _record(
        self,
        step: PlanStep,
        result: StepResult,
        status: str,
        asked: float,
        started: float,
        error: BaseException | None,
    ) -> None:
        if not self.enable_tracing:
            return
        now = clock()
        pool_wait = 0.0
        if self._pool_started:
            took = self._pool_started.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            if took is not None:
                pool_wait = max(0.0, took - started)
        # A tuple now, a TraceEntry when asked for: this runs once per attempt.
        self._trace.append(
            (
                step.step_id,
                step.spec.name,
                status,
                result.attempts,
                started - self._started,
                now - started,
                started - asked,
                pool_wait,
                None if error is None else f"{type(error).__name__}: {error}",
            )
        )


def _timed_out(spec: ToolSpec, timeout: float) -> TimeoutError:
    return TimeoutError(f"{spec.name} took longer than its timeout of {timeout} s")


def _outputs(step: PlanStep, value: Any) -> dict[str, Any]:
    """The artifacts a step's result becomes (see step.py)."""
    produces = step.produces
    if len(produces) == 1:
        for name in produces:
            return {name: value}
    if not produces:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"step {step.step_id!r} produces {sorted(produces)}: its tool must return a mapping "
            f"holding each, got {type(value).__name__}"
        )
    missing = sorted(produces - value.keys())
    if missing:
        raise KeyError(f"step {step.step_id!r} did not return artifacts {missing}")
    return {name: value[name] for name in produces}


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
