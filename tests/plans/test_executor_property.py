"""Random plans run to the artifacts of a sequential run, and never break a lock rule.

Each example draws a DAG (a step consumes only artifacts of steps drawn before it; steps are
listed in a random order that keeps producers first), random reads and writes over four
resources, and async or sync tools. The plan runs twice at once, on two executors sharing one
ResourceLocks, so that the locks (not only the planner's ordering) keep writers alone. Tools
record what they hold in `Holdings`; a writer beside anyone else on its resource, or a reader
beside a writer, is a violation.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_helpers import Barrier, Holdings

from aiotp.plans import Planner, PlanStep, tool_spec
from aiotp.plans.executor import Executor
from aiotp.plans.locks import ResourceLocks
from aiotp.plans.step import resolve

RESOURCES = ["R0", "R1", "R2", "R3"]


@st.composite
def plans(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 9))
    steps = []
    for i in range(n):
        earlier = [f"a{j}" for j in range(i)]
        steps.append(
            {
                "i": i,
                "consumes": draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3))
                if earlier
                else [],
                "reads": draw(st.sets(st.sampled_from(RESOURCES), max_size=2)),
                "writes": draw(st.sets(st.sampled_from(RESOURCES), max_size=2)),
                "kind": draw(st.sampled_from(["async", "sync"])),
                "pauses": draw(st.integers(0, 3)),
            }
        )
    # Listed in a random order that keeps each producer before its consumers: resource
    # conflicts follow list order, so a consumer listed first could close a cycle.
    listed: list[dict[str, Any]] = []
    left = list(steps)
    while left:
        made = {f"a{d['i']}" for d in listed}
        ready = [d for d in left if set(d["consumes"]) <= made]
        pick = ready[draw(st.integers(0, len(ready) - 1))]
        left.remove(pick)
        listed.append(pick)
    return listed


def compute(i: int, inputs: dict[str, Any]) -> str:
    return f"s{i}(" + ",".join(f"{k}={inputs[k]}" for k in sorted(inputs)) + ")"


def build(drawn: list[dict[str, Any]], holdings: Holdings, run: str) -> list[PlanStep]:
    steps = []
    for d in drawn:
        i, reads, writes = d["i"], d["reads"], d["writes"]
        who = f"{run}:s{i}"

        if d["kind"] == "async":

            async def tool(
                _i: int = i,
                _r: Any = reads,
                _w: Any = writes,
                _who: str = who,
                _p: int = d["pauses"],
                **inputs: Any,
            ) -> str:
                holdings.enter(_who, _r, _w)
                try:
                    for _ in range(_p):
                        await asyncio.sleep(0)
                finally:
                    holdings.leave(_r, _w)
                return compute(_i, inputs)

        else:

            def tool(  # type: ignore[misc]
                _i: int = i,
                _r: Any = reads,
                _w: Any = writes,
                _who: str = who,
                _p: int = d["pauses"],
                **inputs: Any,
            ) -> str:
                holdings.enter(_who, _r, _w)
                try:
                    time.sleep(0.0005 * _p)
                finally:
                    holdings.leave(_r, _w)
                return compute(_i, inputs)

        spec = tool_spec(reads=reads, writes=writes, name=f"t{i}")(tool)
        steps.append(
            PlanStep(
                f"s{i}",
                spec,
                args={name: {"$artifact": name} for name in d["consumes"]},
                produces={f"a{i}"},
            )
        )
    return steps


def sequential(steps: list[PlanStep]) -> dict[str, Any]:
    """The same plan, one step at a time in the planner's topological order."""
    plan = Planner().create_plan(steps)
    artifacts: dict[str, Any] = {}
    for step_id in plan.order:
        step = plan.by_id[step_id]
        inputs = resolve(dict(step.args), artifacts)
        i = int(step_id[1:])
        artifacts[next(iter(step.produces))] = compute(i, inputs)
    return artifacts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=plans())
def test_random_plans_match_a_sequential_run_and_never_break_a_lock_rule(
    drawn: list[dict[str, Any]],
) -> None:
    holdings = Holdings()
    expected = sequential(build(drawn, Holdings(), "seq"))

    async def scenario() -> list[dict[str, Any]]:
        locks = ResourceLocks()
        runs = [
            Executor(locks=locks, threads=4).execute_plan(build(drawn, holdings, run))
            for run in ("A", "B")
        ]
        results = await asyncio.gather(*runs)
        assert locks.statistics().holding == 0 and locks.statistics().waiting == 0
        return list(results)

    for artifacts in asyncio.run(scenario()):
        assert artifacts == expected
    assert not holdings.violations, holdings.violations


async def test_the_checker_sees_two_writers_when_the_plans_do_not_share_their_locks() -> None:
    """The property above is not vacuous: without a shared ResourceLocks, two plans' writers of
    one resource do meet, and `Holdings` says so."""
    holdings = Holdings()
    both = Barrier(2)

    @tool_spec(writes={"R0"})
    async def write(who: str) -> None:
        holdings.enter(who, (), {"R0"})
        try:
            await both.wait()
        finally:
            holdings.leave((), {"R0"})

    await asyncio.gather(
        *(Executor().execute_plan([PlanStep("w", write, args={"who": who})]) for who in "AB")
    )
    assert len(holdings.violations) == 1
