"""A plan run as a supervised actor: started by name, cancellable by name, its progress visible.

::

    artifacts = await run_plan(steps, runtime=rt)            # plan, run, wait
    run = await start_plan(rt, steps, name="nightly-etl")     # or keep a handle
    await plan_progress(rt, "nightly-etl")                    # {"running": 2, "done": 5, ...}
    await cancel_plan(rt, "nightly-etl")                      # its caller gets PlanCancelled
    artifacts = await run.result()

Each run is a `PlanRun` actor (temporary: a run is never restarted, a failure is reported to
its caller) under the runtime's plans supervisor, a `DynamicSupervisor` registered as
``("aiotp", "plans")`` and started on first use; the actor is registered as
``("aiotp.plan", name)``. Stopping it (`cancel_plan`, the runtime's shutdown) cancels every
running step, and the run's result becomes `PlanCancelled` carrying the artifacts produced so
far. Runs of one runtime share one `ResourceLocks`, so concurrent plans never write one
resource at once. Without ``runtime=`` `run_plan` runs the plan in the calling task (local
tools only).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from aiotp.plans.errors import PlanCancelled
from aiotp.plans.executor import Executor
from aiotp.plans.locks import ResourceLocks
from aiotp.plans.plan import Plan
from aiotp.plans.step import PlanStep
from aiotp.runtime.actor import Actor
from aiotp.runtime.cancel import await_through_cancel
from aiotp.runtime.errors import NameTaken

__all__ = ["PlanHandle", "PlanRun", "cancel_plan", "plan_progress", "run_plan", "start_plan"]

SUPERVISOR = ("aiotp", "plans")
_names = itertools.count(1)


def plan_name(name: str) -> tuple[str, str]:
    return ("aiotp.plan", name)


class PlanRun(Actor):
    """Runs one plan in a task it owns; its result goes to the future its starter waits on."""

    async def init(
        self,
        plan: Plan,
        executor: Executor,
        initial: Mapping[str, Any] | None,
        done: asyncio.Future[dict[str, Any]],
        name: str,
    ) -> None:
        self.executor = executor
        self.done = done
        self.run_name = name
        self.task = asyncio.get_running_loop().create_task(
            self._execute(plan, initial), name=f"plan {name}"
        )

    async def _execute(self, plan: Plan, initial: Mapping[str, Any] | None) -> None:
        try:
            artifacts = await self.executor.execute_plan(plan, initial)
        except asyncio.CancelledError:
            self._settle_cancelled()
            raise
        except BaseException as exc:
            if not self.done.done():
                self.done.set_exception(exc)
        else:
            if not self.done.done():
                self.done.set_result(artifacts)
        self.ref.send("finished")

    async def handle_info(self, msg: Any) -> None:
        if msg == "finished":
            self.stop("normal")

    async def handle_call(self, msg: Any, caller: Any) -> Any:
        if msg == "progress":
            return self.executor.progress()
        return await super().handle_call(msg, caller)

    async def terminate(self, reason: Any) -> None:
        if not self.task.done():
            self.task.cancel()
            await await_through_cancel(self.task, 15.0)
        self._settle_cancelled()

    def on_exit(self, reason: Any) -> None:
        if not self.task.done():
            self.task.cancel()  # killed without terminate: its steps still stop
        self._settle_cancelled()

    def _settle_cancelled(self) -> None:
        if not self.done.done():
            self.done.set_exception(
                PlanCancelled(
                    f"plan {self.run_name!r} was cancelled", dict(self.executor.artifacts)
                )
            )
            self.done.exception()  # read: a caller that left must not leave it unretrieved


class PlanHandle:
    """A started plan run: its ``name``, its actor ``ref``; `result` waits for it."""

    def __init__(self, rt: Any, name: str, ref: Any, done: asyncio.Future[dict[str, Any]]):
        self.rt = rt
        self.name = name
        self.ref = ref
        self._done = done

    async def result(self) -> dict[str, Any]:
        """The artifacts; `StepFailed` or `PlanCancelled` otherwise. Cancelling this wait
        leaves the run running (`cancel` stops it)."""
        return await asyncio.shield(self._done)

    @property
    def done(self) -> bool:
        return self._done.done()

    async def progress(self) -> dict[str, Any]:
        return await plan_progress(self.rt, self.name)

    async def cancel(self) -> bool:
        return await cancel_plan(self.rt, self.name)

    def __repr__(self) -> str:
        return f"<PlanHandle {self.name!r} {'done' if self.done else 'running'}>"


async def _supervisor(rt: Any) -> Any:
    from aiotp.supervisors import DynamicSupervisor

    sup = rt.whereis(SUPERVISOR)
    if sup is None or not sup.alive:
        try:
            sup = await rt.spawn(DynamicSupervisor, name=SUPERVISOR)
        except NameTaken:  # another run started it meanwhile
            sup = rt.whereis(SUPERVISOR)
    return sup


def shared_locks(rt: Any) -> ResourceLocks:
    locks: ResourceLocks = rt.extension("aiotp.plans.locks", lambda _rt: ResourceLocks())
    return locks


async def start_plan(
    rt: Any,
    steps: Plan | Iterable[PlanStep],
    *,
    name: str | None = None,
    initial_artifacts: Mapping[str, Any] | None = None,
    **executor_options: Any,
) -> PlanHandle:
    """Validate `steps` and start running them as a supervised actor; `NameTaken` if a run of
    that name is running. Executor options as `Executor` (``runtime`` is `rt`)."""
    from aiotp.plans.planner import Planner
    from aiotp.supervisors import ChildSpec

    initial = dict(initial_artifacts or {})
    plan = steps if isinstance(steps, Plan) else Planner().create_plan(list(steps), initial)
    if name is None:
        name = f"plan-{next(_names)}"
    elif not isinstance(name, str) or not name:
        raise TypeError(f"plan name must be a non-empty string, got {name!r}")
    executor_options.setdefault("locks", shared_locks(rt))
    executor = Executor(runtime=rt, **executor_options)
    executor._check(plan, initial)  # bad input fails here, not inside the actor
    done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    spec = ChildSpec(
        name,
        PlanRun,
        args=(plan, executor, initial, done, name),
        restart="temporary",
        name=plan_name(name),
    )
    from aiotp.supervisors.errors import StartChildError

    try:
        ref = await (await _supervisor(rt)).start_child(spec)
    except StartChildError as exc:
        if isinstance(exc.cause, NameTaken):  # the supervisor wraps it; the caller asked by name
            raise exc.cause from None
        raise
    return PlanHandle(rt, name, ref, done)


async def run_plan(
    steps: Plan | Iterable[PlanStep],
    runtime: Any = None,
    *,
    initial_artifacts: Mapping[str, Any] | None = None,
    name: str | None = None,
    **executor_options: Any,
) -> dict[str, Any]:
    """Plan, run and wait: the artifacts, or `StepFailed` / `PlanCancelled` / a validation
    error. Cancelling it cancels the run."""
    if runtime is None:
        return await Executor(**executor_options).execute_plan(
            steps if isinstance(steps, Plan) else list(steps), initial_artifacts
        )
    run = await start_plan(
        runtime, steps, name=name, initial_artifacts=initial_artifacts, **executor_options
    )
    try:
        return await run.result()
    except asyncio.CancelledError:
        await await_through_cancel(run.cancel(), 20.0)
        raise


async def plan_progress(rt: Any, name: str) -> dict[str, Any]:
    """Steps of the running plan `name` by status (see `Executor.progress`)."""
    ref = rt.whereis(plan_name(name))
    if ref is None:
        raise LookupError(f"no plan named {name!r} is running")
    progress: dict[str, Any] = await ref.call("progress")
    return progress


async def cancel_plan(rt: Any, name: str) -> bool:
    """Stop the running plan `name` (its steps are cancelled); False if none is running."""
    ref = rt.whereis(plan_name(name))
    sup = rt.whereis(SUPERVISOR)
    if ref is None or sup is None:
        return False
    await sup.terminate_child(ref)
    return True
