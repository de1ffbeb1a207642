"""Plans in a runtime: pool steps over a real process pool (a worker SIGKILLed mid-step), plan
runs as supervised actors (by name, progress, cancel, shutdown), and the traces people read."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from plan_helpers import Barrier, settle, until

import aiotp
from aiotp.plans import PlanCancelled, PlanStep, StepFailed, pool_tool, tool_spec
from aiotp.plans.executor import Executor
from aiotp.plans.run import cancel_plan, plan_name, plan_progress, run_plan, start_plan
from aiotp.plans.trace import format_timeline, to_chrome_trace
from aiotp.runtime.errors import NameTaken


def ref(name: str) -> dict[str, str]:
    return {"$artifact": name}


@tool_spec()
def load() -> int:
    return 3


@tool_spec()
async def add(a: int, b: int) -> int:
    return a + b


class Gate:
    """A step that says it is running, holds until released, and says its finally ran."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.release = asyncio.Event()
        self.cleaned = asyncio.Event()

        @tool_spec(name="gate")
        async def gate(value: Any = "g") -> Any:
            self.running.set()
            try:
                await self.release.wait()
            finally:
                self.cleaned.set()
            return value

        self.tool = gate


# -- pool steps ------------------------------------------------------------------------------


async def kill_when_marked(marker: Path) -> int:
    await until(lambda: marker.exists() and marker.read_text() != "")
    pid = int(marker.read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


async def test_an_idempotent_pool_step_whose_worker_is_sigkilled_is_retried(
    rt: aiotp.Runtime, tmp_path: Path
) -> None:
    await rt.start_pool("plan", "plan_adapters:PlanTools", profile="process", size=1)
    marker = tmp_path / "marker"
    hit = pool_tool("plan", "square_once_killed", idempotent=True)
    steps = [
        PlanStep("load", load, produces={"n"}),
        PlanStep("hit", hit, args={"x": ref("n"), "marker": str(marker)}, produces={"a"}),
        # Ready with "hit" and listed after it: it queues for the pool's only worker.
        PlanStep(
            "queued",
            pool_tool("plan", "square"),
            args={"x": 5},
            produces={"b"},
            depends_on={"load"},
        ),
        PlanStep("sum", add, args={"a": ref("a"), "b": ref("b")}, produces={"total"}),
    ]
    executor = Executor(runtime=rt, backoff=0.01)
    run = asyncio.create_task(executor.execute_plan(steps))
    killed = await kill_when_marked(marker)
    artifacts = await run
    assert artifacts == {"n": 3, "a": 9, "b": 25, "total": 34}
    assert killed not in {w.pid for w in rt.pool_stats("plan").workers}
    hits = [e for e in executor.get_trace() if e["step_id"] == "hit"]
    assert [(e["attempt"], e["status"]) for e in hits] == [(1, "error"), (2, "ok")]
    assert "WorkerCrashed" in hits[0]["error"]
    assert executor.get_results()["hit"].attempts == 2
    queued = next(e for e in executor.get_trace() if e["step_id"] == "queued")
    assert queued["pool_wait"] > 0  # it waited for the worker "hit" held (and its replacement)
    assert all("pool_wait" in e for e in executor.get_trace())


async def test_a_pool_step_not_declared_idempotent_fails_when_its_worker_dies(
    rt: aiotp.Runtime, tmp_path: Path
) -> None:
    await rt.start_pool("plan", "plan_adapters:PlanTools", profile="process", size=1)
    marker = tmp_path / "marker"
    hit = pool_tool("plan", "square_once_killed")
    executor = Executor(runtime=rt)
    run = asyncio.create_task(
        executor.execute_plan([PlanStep("hit", hit, args={"x": 2, "marker": str(marker)})])
    )
    await kill_when_marked(marker)
    with pytest.raises(StepFailed) as caught:
        await run
    assert isinstance(caught.value.__cause__, aiotp.WorkerCrashed)
    assert executor.get_results()["hit"].attempts == 1


async def test_a_plan_with_pool_steps_needs_a_runtime() -> None:
    from aiotp.plans import PlanValidationError

    with pytest.raises(PlanValidationError, match="runtime="):
        await Executor().execute_plan([PlanStep("p", pool_tool("plan", "square"), args={"x": 1})])


# -- plan runs as actors ---------------------------------------------------------------------


async def test_start_plan_by_name_shows_progress_while_it_runs(rt: aiotp.Runtime) -> None:
    gate = Gate()
    both = Barrier(2)

    @tool_spec()
    async def held(tag: str, first: int) -> str:
        await both.wait()
        await gate.release.wait()
        return tag

    steps = [
        PlanStep("first", load, produces={"n"}),
        PlanStep("b", held, args={"tag": "b", "first": ref("n")}, produces={"b"}),
        PlanStep("c", held, args={"tag": "c", "first": ref("n")}, produces={"c"}),
    ]
    handle = await start_plan(rt, steps, name="nightly")
    assert handle.name == "nightly" and "nightly" in repr(handle)
    await until(both.full.is_set)
    progress = await plan_progress(rt, "nightly")
    assert (progress["running"], progress["done"]) == (2, 1)
    assert progress["steps"] == {"first": "done", "b": "running", "c": "running"}
    assert await handle.progress() == progress
    assert not handle.done
    gate.release.set()
    assert await handle.result() == {"n": 3, "b": "b", "c": "c"}
    await until(lambda: rt.whereis(plan_name("nightly")) is None)
    with pytest.raises(LookupError):
        await plan_progress(rt, "nightly")


async def test_cancel_plan_stops_its_steps_and_the_caller_gets_partial_artifacts(
    rt: aiotp.Runtime,
) -> None:
    gate = Gate()
    steps = [
        PlanStep("first", load, produces={"n"}),
        PlanStep("slow", gate.tool, args={"value": ref("n")}, produces={"s"}),
        PlanStep("after", add, args={"a": ref("s"), "b": 1}, produces={"t"}),
    ]
    handle = await start_plan(rt, steps, name="etl")
    await until(gate.running.is_set)
    assert await cancel_plan(rt, "etl") is True
    assert gate.cleaned.is_set()  # the running step was cancelled and its finally ran
    with pytest.raises(PlanCancelled) as caught:
        await handle.result()
    assert caught.value.artifacts == {"n": 3}
    assert rt.whereis(plan_name("etl")) is None
    assert await cancel_plan(rt, "etl") is False


async def test_a_second_run_of_a_running_name_is_refused_until_the_first_ends(
    rt: aiotp.Runtime,
) -> None:
    gate = Gate()
    first = await start_plan(rt, [PlanStep("g", gate.tool, produces={"g"})], name="dup")
    await until(gate.running.is_set)
    with pytest.raises(NameTaken):
        await start_plan(rt, [PlanStep("x", load, produces={"x"})], name="dup")
    assert not first.done  # the refused start did not touch the running one
    gate.release.set()
    assert await first.result() == {"g": "g"}
    await until(lambda: rt.whereis(plan_name("dup")) is None)
    again = await start_plan(rt, [PlanStep("x", load, produces={"x"})], name="dup")
    assert await again.result() == {"x": 3}


async def test_cancelling_run_plans_caller_cancels_the_run(rt: aiotp.Runtime) -> None:
    gate = Gate()
    caller = asyncio.create_task(
        run_plan([PlanStep("g", gate.tool, produces={"g"})], rt, name="owned")
    )
    await until(gate.running.is_set)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert gate.cleaned.is_set()
    assert rt.whereis(plan_name("owned")) is None


async def test_run_plan_returns_artifacts_or_raises_step_failed(rt: aiotp.Runtime) -> None:
    @tool_spec()
    def boom() -> None:
        raise ValueError("no")

    assert await run_plan([PlanStep("l", load, produces={"n"})], rt) == {"n": 3}
    assert await run_plan([PlanStep("l", load, produces={"n"})]) == {"n": 3}  # no runtime
    with pytest.raises(StepFailed) as caught:
        await run_plan([PlanStep("l", load, produces={"n"}), PlanStep("b", boom)], rt)
    assert caught.value.step_id == "b" and caught.value.artifacts == {"n": 3}


async def test_runtime_shutdown_with_a_plan_running_cancels_it_cleanly() -> None:
    gate = Gate()
    async with aiotp.Runtime(shutdown_timeout=2.0) as rt:
        handle = await start_plan(
            rt, [PlanStep("first", load, produces={"n"}), PlanStep("g", gate.tool)], name="late"
        )
        await until(gate.running.is_set)
        # "first" runs in a thread beside "g": shut down only once it is done (on a loaded
        # machine it could still be running when g is, and its artifact not made yet).
        deadline = asyncio.get_running_loop().time() + 30
        while (await handle.progress())["steps"]["first"] != "done":
            assert asyncio.get_running_loop().time() < deadline, "the first step never ended"
            await asyncio.sleep(0.01)
    assert gate.cleaned.is_set()
    with pytest.raises(PlanCancelled) as caught:
        await handle.result()
    assert caught.value.artifacts == {"n": 3}
    await settle()
    current = asyncio.current_task()
    assert not [t for t in asyncio.all_tasks() if t is not current and not t.done()]


# -- traces ----------------------------------------------------------------------------------


async def test_chrome_trace_is_valid_trace_event_json_with_concurrent_steps_on_two_rows() -> None:
    middle = Barrier(2)

    @tool_spec()
    async def side(tag: str, n: int) -> str:
        await middle.wait()
        return tag

    executor = Executor()
    await executor.execute_plan(
        [
            PlanStep("first", load, produces={"n"}),
            PlanStep("left", side, args={"tag": "l", "n": ref("n")}),
            PlanStep("right", side, args={"tag": "r", "n": ref("n")}),
        ]
    )
    trace = executor.get_trace()
    chrome = json.loads(json.dumps(to_chrome_trace(trace)))
    assert chrome == to_chrome_trace(executor.trace_entries())  # dicts or entries alike
    steps = {e["name"]: e for e in chrome["traceEvents"] if e["ph"] == "X" and e["pid"] == 1}
    assert set(steps) == {"first", "left", "right"}
    for entry in trace:
        event = steps[entry["step_id"]]
        assert event["ts"] == pytest.approx(entry["start"] * 1e6)
        assert event["dur"] == pytest.approx(entry["duration"] * 1e6)
        assert event["args"]["status"] == "ok" and event["args"]["attempt"] == 1
    assert steps["left"]["tid"] != steps["right"]["tid"]
    assert {e["name"] for e in chrome["traceEvents"] if e["ph"] == "M"} == {"process_name"}


async def test_format_timeline_prints_one_line_per_attempt() -> None:
    calls: list[int] = []

    @tool_spec(idempotent=True)
    async def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("flake")
        return len(calls)

    executor = Executor(backoff=0)
    await executor.execute_plan([PlanStep("first", load), PlanStep("flaky", flaky)])
    lines = format_timeline(executor.get_trace(), width=40).splitlines()
    assert len(lines) == 1 + 4  # header, first, flaky x3
    attempts = [line.split("|")[0].strip() for line in lines[1:]]
    assert sorted(attempts) == ["first #1", "flaky #1", "flaky #2", "flaky #3"]
    assert sum(line.endswith(" error") for line in lines) == 2
    assert all(len(line.split("|")[1]) == 40 for line in lines[1:])
    assert all(line.split("|")[1].strip(" .") for line in lines[1:])  # each attempt shows a mark
    assert format_timeline([]) == "(no steps ran)"
