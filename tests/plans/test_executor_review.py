"""The executor against what a hostile review found: retries racing a stopping run, sync
steps outliving their timeout, the thread pool's queue, odd exceptions, reuse, bad input.
Each test failed on the executor before its fix."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest

from aiotp.plans import (
    DuplicateProducer,
    Executor,
    PlanStep,
    ResourceLocks,
    StepFailed,
    ToolSpec,
    tool_spec,
)


async def test_no_retry_starts_once_the_run_stops() -> None:
    """A tool that turns its cancellation into an error must not be retried after the plan
    stopped; nothing of the run is left running when execute_plan returns."""
    calls: list[int] = []

    @tool_spec(idempotent=True)
    async def stubborn() -> None:
        calls.append(1)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ConnectionError("request aborted") from None

    @tool_spec()
    async def bad() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    executor = Executor(backoff=0.01)
    steps = [PlanStep("slow", stubborn), PlanStep("bad", bad)]
    with pytest.raises(StepFailed) as info:
        await executor.execute_plan(steps)
    assert info.value.step_id == "bad"
    await asyncio.sleep(0.1)  # a retry would have started by now
    assert calls == [1]
    alive = [t for t in asyncio.all_tasks() if t.get_name().startswith("plan step")]
    assert not alive
    assert set(executor.progress()["steps"].values()) <= {"failed", "cancelled"}


async def test_a_timed_out_sync_writer_keeps_its_resource_until_its_thread_returns() -> None:
    lock = threading.Lock()
    inside = [0]
    overlaps: list[str] = []
    first = [True]

    def writing(who: str, seconds: float) -> None:
        with lock:
            inside[0] += 1
            if inside[0] > 1:
                overlaps.append(who)
        try:
            time.sleep(seconds)
        finally:
            with lock:
                inside[0] -= 1

    @tool_spec(writes={"r"}, idempotent=True, timeout=0.1)
    def slow_writer() -> str:
        seconds = 0.5 if first[0] else 0.01
        first[0] = False
        writing("retry", seconds)
        return "w"

    @tool_spec(writes={"r"})
    def other_writer() -> str:
        writing("other plan", 0.01)
        return "o"

    locks = ResourceLocks()
    one = Executor(locks=locks, backoff=0.01)
    two = Executor(locks=locks)
    first_plan = one.execute_plan([PlanStep("w", slow_writer, produces={"x"})])

    async def second_plan() -> Any:
        await asyncio.sleep(0.15)  # after the first attempt timed out, while its thread runs
        return await two.execute_plan([PlanStep("o", other_writer, produces={"y"})])

    results = await asyncio.gather(first_plan, second_plan())
    assert results == [{"x": "w"}, {"y": "o"}]
    assert [e["status"] for e in one.get_trace()] == ["timeout", "ok"]
    assert not overlaps, f"two writers on 'r' at once: {overlaps}"


async def test_a_sync_steps_timeout_counts_from_when_a_thread_runs_it() -> None:
    ran: list[int] = []

    @tool_spec(timeout=0.3)
    def work(i: int) -> int:
        ran.append(i)
        time.sleep(0.05)
        return i

    executor = Executor(threads=2)
    artifacts = await executor.execute_plan(
        [PlanStep(f"w{i}", work, args={"i": i}, produces={f"a{i}"}) for i in range(20)]
    )
    assert len(artifacts) == 20 and sorted(ran) == list(range(20))


@pytest.mark.parametrize("bad", [math.inf, math.nan, -1.0, 0])
def test_timeouts_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        Executor(default_timeout=bad)
    with pytest.raises(ValueError, match="finite"):
        ToolSpec(name="t", timeout=bad)


class Custom(BaseException):
    pass


@pytest.mark.parametrize("fast", [True, False])
async def test_a_step_ended_by_a_base_exception_is_failed_and_not_retried(fast: bool) -> None:
    @tool_spec(idempotent=True, writes=None if fast else {"r"})
    async def odd() -> None:
        raise Custom("not an Exception")

    executor = Executor(backoff=0.01)
    with pytest.raises(StepFailed):
        await executor.execute_plan([PlanStep("s", odd)])
    result = executor.get_results()["s"]
    assert result.status.value == "failed" and result.attempts == 1
    assert [e["status"] for e in executor.get_trace()] == ["error"]


async def test_an_executor_runs_again_in_another_loop_with_fresh_caps() -> None:
    @tool_spec(concurrency_cap=1)
    async def capped(i: int) -> int:
        await asyncio.sleep(0)
        return i

    executor = Executor()
    steps = [PlanStep(f"x{i}", capped, args={"i": i}, produces={f"x{i}"}) for i in range(3)]
    await executor.execute_plan(steps)

    def other_loop() -> dict[str, Any]:
        return asyncio.run(executor.execute_plan(steps))

    assert await asyncio.to_thread(other_loop) == {"x0": 0, "x1": 1, "x2": 2}


async def test_an_initial_artifact_a_step_produces_is_refused() -> None:
    from aiotp.plans import Planner

    @tool_spec()
    def make() -> int:
        return 1

    plan = Planner().create_plan([PlanStep("m", make, produces={"x"})])
    with pytest.raises(DuplicateProducer, match="'x'"):
        await Executor().execute_plan(plan, initial_artifacts={"x": 5})
