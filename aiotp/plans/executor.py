"""`Executor`: runs a `Plan`, every ready step at once, within its locks, caps and timeouts.

::

    executor = Executor(max_retries=3, default_timeout=300.0, enable_tracing=True, runtime=rt)
    artifacts = await executor.execute_plan(plan, initial_artifacts={"input": data})
    executor.get_trace(); executor.get_results(); executor.progress()

Rules:
- A step starts as soon as every step it depends on is done. It then waits for its tool's
  ``concurrency_cap`` (per tool: a `tool_spec` function, or a pool's tool by pool and name) and
  takes every resource its tool reads or writes at once (`ResourceLocks`: readers share,
  writers are exclusive, a waiting writer is not overtaken). Conflicting steps of one plan are
  already ordered by the planner; the locks keep concurrent plans sharing a `ResourceLocks`
  (``locks=``; `run_plan` shares one per runtime) apart.
- Sync tools run in a thread pool, async tools on the loop, pool tools through ``rt.execute``
  (their pool's supervision, affinity with ``session=``, typed errors and cancellation).
- ``timeout`` (the tool's, else ``default_timeout``) bounds each attempt's run, counted from
  when the tool starts (not its wait for its cap, its resources or a free thread): an async
  tool is cancelled, a pool tool through the pool's own cancellation, a sync tool is no
  longer waited for (a thread cannot be interrupted: it finishes in the background, and the
  step's cap slot and resources stay taken until it has, so no other writer runs beside it).
- Retries: a failed attempt of an idempotent tool is retried up to ``max_retries`` times, with
  backoff (``backoff`` doubling up to ``max_backoff``), outside its locks; other tools fail at
  the first error.
- ``failure_policy="stop"`` (default): the first step that fails for good cancels the running
  steps, none starts after it, and `StepFailed` names it and carries the artifacts produced so
  far. ``"continue"``: the steps that depend on it are skipped, the independent branches
  finish, then `StepFailed` names the first failure.
- Cancelling `execute_plan` (or a failure under ``"stop"``) cancels every running step and
  waits for them before it re-raises, at most 10 s for a step that ignores its cancellation
  (logged); no retry starts once a run stops, so nothing of it is left running on the loop.
- One plan at a time per executor: `get_trace`/`get_results` describe the last run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import math
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from time import perf_counter as clock  # traces: uvloop's loop.time() ticks in ms
from typing import Any

from aiotp.plans.attempts import Attempts, Board
from aiotp.plans.deadlines import Deadlines
from aiotp.plans.errors import (
    DuplicateProducer,
    PlanValidationError,
    StepFailed,
    UnknownArtifact,
)
from aiotp.plans.locks import ResourceLocks
from aiotp.plans.plan import Plan
from aiotp.plans.results import StepResult, StepStatus, TraceEntry
from aiotp.plans.step import PlanStep
from aiotp.runtime import telemetry
from aiotp.runtime.cancel import await_through_cancel

__all__ = ["FAILURE_POLICIES", "Executor"]

_log = logging.getLogger("aiotp.plans")
FAILURE_POLICIES = ("stop", "continue")
CLEANUP_TIMEOUT = 10.0  # seconds a cancelled run waits for its steps to end
_executor_ids = itertools.count(1)


class Executor(Attempts):
    """See the module docstring."""

    def __init__(
        self,
        max_retries: int = 3,
        default_timeout: float = 300.0,
        enable_tracing: bool = True,
        *,
        runtime: Any = None,
        failure_policy: str = "stop",
        session: str | None = None,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        locks: ResourceLocks | None = None,
        threads: int | None = None,
    ) -> None:
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        for name, value in (("default_timeout", default_timeout), ("max_backoff", max_backoff)):
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not isinstance(backoff, int | float) or isinstance(backoff, bool) or backoff < 0:
            raise ValueError(f"backoff must be a number >= 0, got {backoff!r}")
        if failure_policy not in FAILURE_POLICIES:
            raise ValueError(
                f"failure_policy must be one of {FAILURE_POLICIES}, got {failure_policy!r}"
            )
        if session is not None and (not isinstance(session, str) or not session):
            raise TypeError(f"session must be a non-empty string, got {session!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
        self.max_retries = max_retries
        self.default_timeout = float(default_timeout)
        self.enable_tracing = enable_tracing
        self.runtime = runtime
        self.failure_policy = failure_policy
        self.session = session
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.locks = locks if locks is not None else ResourceLocks()
        self.threads = threads or min(32, (os.cpu_count() or 1) + 4)
        self._caps: dict[Any, asyncio.Semaphore] = {}
        self._results: dict[str, StepResult] = {}
        self._trace: list[tuple[Any, ...]] = []  # TraceEntry fields, one per attempt
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set per run
        self._deadlines: Deadlines = None  # type: ignore[assignment]
        self.artifacts: dict[str, Any] = {}  # the last run's, also while it runs or failed
        self._running = False
        self._started = 0.0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_started: dict[asyncio.Task[Any], float] = {}
        self._lingering: dict[asyncio.Task[Any], concurrent.futures.Future[Any]] = {}
        self._stopping = False  # the run is being stopped: no retry may start
        self._handler_id = f"aiotp.plans.executor.{next(_executor_ids)}"

    # -- introspection ------------------------------------------------------------------------
    def get_trace(self) -> list[dict[str, Any]]:
        """One entry per attempt of the last run (empty without ``enable_tracing``)."""
        return [entry.as_dict() for entry in self.trace_entries()]

    def trace_entries(self) -> list[TraceEntry]:
        return [TraceEntry(*fields) for fields in self._trace]

    def get_results(self) -> dict[str, StepResult]:
        return dict(self._results)

    def progress(self) -> dict[str, Any]:
        """Steps by status, now (also while the plan runs): ``{"pending": 3, "running": 2,
        ..., "steps": {step_id: status}}``."""
        counts = {status.value: 0 for status in StepStatus}
        steps = {}
        for step_id, result in self._results.items():
            counts[result.status.value] += 1
            steps[step_id] = result.status.value
        return {**counts, "steps": steps}

    # -- running a plan ---------------------------------------------------------------------
    async def execute_plan(
        self, plan: Plan | Iterable[PlanStep], initial_artifacts: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run `plan` (or a list of steps, planned first) and return every artifact."""
        if self._running:
            raise RuntimeError("this Executor is already running a plan; use one per run")
        artifacts = dict(initial_artifacts or {})
        self.artifacts = artifacts
        if not isinstance(plan, Plan):
            from aiotp.plans.planner import Planner

            plan = Planner().create_plan(list(plan), initial_artifacts=artifacts.keys())
        self._check(plan, artifacts)
        self._running = True
        self._results = {step.step_id: StepResult(step.step_id) for step in plan.steps}
        self._trace = []
        self._caps = {}  # per run: a cap is never shared with another run's (or loop's) steps
        self._stopping = False
        loop = self._loop = asyncio.get_running_loop()
        self._started = clock()
        self._deadlines = Deadlines(loop)
        try:
            async with self._pool_watch(plan):
                await self._run(plan, artifacts)
        finally:
            self._running = False
            self._deadlines.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
        return artifacts

    def _check(self, plan: Plan, artifacts: Mapping[str, Any]) -> None:
        missing = sorted(plan.initial_artifacts - artifacts.keys())
        if missing:
            raise UnknownArtifact(f"the plan needs initial artifacts {missing}, not given")
        clash = sorted(artifacts.keys() & plan.producers.keys())
        if clash:
            raise DuplicateProducer(
                f"initial artifacts {clash} are also produced by steps "
                f"{sorted({plan.producers[name] for name in clash})}"
            )
        for step in plan.steps:
            if step.spec.kind == "pool" and self.runtime is None:
                raise PlanValidationError(
                    f"step {step.step_id!r} runs pool tool {step.spec.name!r}: the executor "
                    "needs runtime= (or run_plan(..., runtime=rt))"
                )

    async def _run(self, plan: Plan, artifacts: dict[str, Any]) -> None:
        position = {step_id: i for i, step_id in enumerate(plan.order)}
        waiting = {step_id: len(deps) for step_id, deps in plan.dependencies.items()}
        ready = [step_id for step_id in plan.order if not waiting[step_id]]
        dependents = dict(plan.dependents)  # plain dicts: read once per finished step
        results = self._results
        pending = StepStatus.PENDING
        board = Board(artifacts)
        running = board.running
        first_failure: tuple[str, BaseException] | None = None
        try:
            while ready or running:
                for step_id in ready:
                    self._launch(plan.by_id[step_id], board)
                ready = []
                await board.wait()
                failed = []
                while board.finished:
                    task, error = board.finished.popleft()
                    step_id = running.pop(task)
                    if error is not None:
                        self._ended_by(step_id, error)
                    if error is None:
                        for dependent in dependents[step_id]:
                            waiting[dependent] -= 1
                            if not waiting[dependent] and results[dependent].status is pending:
                                ready.append(dependent)
                    else:
                        failed.append((position[step_id], step_id, error))
                # Of steps failing in one loop turn, the first in plan order is "the" failure.
                for _, step_id, error in sorted(failed, key=lambda f: f[0]):
                    if first_failure is None:
                        first_failure = (step_id, error)
                    self._skip_dependents(plan, step_id)
                if first_failure is not None and self.failure_policy == "stop":
                    await self._cancel(running)
                    break
                ready.sort(key=position.__getitem__)
        except asyncio.CancelledError:
            self._stopping = True
            await await_through_cancel(self._cancel(running), CLEANUP_TIMEOUT + 1.0)
            self._mark_unstarted(StepStatus.CANCELLED)
            raise
        if first_failure is not None:
            self._mark_unstarted(StepStatus.SKIPPED)
            step_id, error = first_failure
            raise StepFailed(
                f"plan step {step_id!r} failed: {type(error).__name__}: {error}",
                step_id,
                error,
                dict(artifacts),
            ) from error

    def _status(self, step_id: str) -> StepStatus:
        return self._results[step_id].status

    def _skip_dependents(self, plan: Plan, step_id: str) -> None:
        stack = list(plan.dependents[step_id])
        while stack:
            dependent = stack.pop()
            result = self._results[dependent]
            if result.status is StepStatus.PENDING:
                result.status = StepStatus.SKIPPED
                stack.extend(plan.dependents[dependent])

    def _mark_unstarted(self, status: StepStatus) -> None:
        for result in self._results.values():
            if result.status in (StepStatus.PENDING, StepStatus.WAITING):
                result.status = status

    def _ended_by(self, step_id: str, error: BaseException) -> None:
        """A step ended with `error`, however it got there: its status says so."""
        result = self._results[step_id]
        if result.status not in (StepStatus.FAILED, StepStatus.CANCELLED):
            cancelled = isinstance(error, asyncio.CancelledError)
            result.status = StepStatus.CANCELLED if cancelled else StepStatus.FAILED
            if not cancelled and result.error is None:
                result.error = error

    async def _cancel(self, running: dict[asyncio.Task[Any], str]) -> None:
        """Cancel every running step and wait for them, at most CLEANUP_TIMEOUT: a step that
        ignores its cancellation is left behind (with a WARNING), not waited for forever."""
        self._stopping = True
        for task in running:
            task.cancel()
        if running:
            _, late = await asyncio.wait(running, timeout=CLEANUP_TIMEOUT)
            for task in late:
                _log.warning(
                    "plan step %r ignored its cancellation for %s s; leaving it",
                    running[task],
                    CLEANUP_TIMEOUT,
                )
        for task, step_id in running.items():
            if not task.done() or task.cancelled():
                self._results[step_id].status = StepStatus.CANCELLED
            else:
                error = task.exception()  # read: a step failing as the run stopped is not news
                if error is not None:
                    self._ended_by(step_id, error)
        running.clear()

    @contextlib.asynccontextmanager
    async def _pool_watch(self, plan: Plan) -> AsyncIterator[None]:
        """While a traced plan with pool steps runs, note when a worker takes each request."""
        if not self.enable_tracing or not any(s.spec.kind == "pool" for s in plan.steps):
            yield
            return

        def taken(_event: Any, _measurements: Any, _meta: Any) -> None:
            task = asyncio.current_task()
            if task is not None and task.get_name().startswith("plan step "):
                self._pool_started[task] = clock()

        telemetry.attach(self._handler_id, ("aiotp", "pool", "execute", "start"), taken)
        try:
            yield
        finally:
            telemetry.detach(self._handler_id)
            self._pool_started.clear()
