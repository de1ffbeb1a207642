"""Plans: planning and validating 10,000 steps against the stdlib's graphlib sorting the same
graph once it is known (the floor: no validation, no edges to derive), and the parallelism
analysis against levels taken round by round with graphlib.

    python benchmarks/bench_plans.py [--json] [--quick]

Targets (the issue): plan + validate 10,000 steps in <= 100 ms; the executor's scheduling
overhead per step (1,000 no-op async steps, 10 levels of 100, each step taking two artifacts of
the level before) <= 2x a hand-written asyncio.gather of each level over the same DAG. Add rows
by adding a function that returns a list of rows to ROWS (each takes the parsed args).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import graphlib
import time
from collections.abc import Callable
from typing import Any

from harness import Row, alternate, emit, parse_args

from aiotp.plans import Plan, Planner, PlanStep, tool_spec
from aiotp.plans.executor import Executor
from aiotp.runtime.loop import loop_factory

RESOURCES = [f"db:{k}" for k in range(40)]


def workload(n: int) -> list[PlanStep]:
    """A mixed plan: chains of data flow (one consumer in ten listed before its producer, so
    the order is not simply the given one), fan-in from nested references, and resources read
    by most steps and written by one in five."""
    steps = []
    for i in range(n):
        reads = {RESOURCES[i % 40], RESOURCES[(i * 7) % 40]}
        writes = {RESOURCES[(i * 13) % 40]} if i % 5 == 0 else set()
        tool = tool_spec(reads=reads - writes, writes=writes, name=f"tool{i % 50}")(_noop)
        args: dict[str, Any] = {"n": i, "label": "x"}
        consumes = set()
        if i >= 2:
            args["prev"] = [{"rows": {"$artifact": f"a{i - 2}"}}]
        if i % 10 == 3 and i + 1 < n:
            consumes.add(f"a{i + 1}")  # produced by the next step: a backward edge
        elif i >= 10:
            consumes.add(f"a{i // 2}")
        steps.append(PlanStep(f"s{i}", tool, args=args, consumes=consumes, produces={f"a{i}"}))
    return steps


def _noop(**_: Any) -> None:
    return None


def plan_steps(steps: list[PlanStep]) -> Callable[[], float]:
    planner = Planner()

    def bench() -> float:
        gc.collect()  # each side starts from the same heap: no inherited collection debt
        t0 = time.perf_counter()
        planner.create_plan(steps)
        return (time.perf_counter() - t0) * 1e3

    return bench


def graphlib_sort(edges: list[tuple[str, list[str]]]) -> Callable[[], float]:
    def bench() -> float:
        gc.collect()  # each side starts from the same heap: no inherited collection debt
        t0 = time.perf_counter()
        graph = {sid: set(before) for sid, before in edges}
        list(graphlib.TopologicalSorter(graph).static_order())
        return (time.perf_counter() - t0) * 1e3

    return bench


def analyze(plan: Plan) -> Callable[[], float]:
    planner = Planner()

    def bench() -> float:
        gc.collect()  # each side starts from the same heap: no inherited collection debt
        t0 = time.perf_counter()
        planner.analyze_parallelism(plan)
        return (time.perf_counter() - t0) * 1e3

    return bench


def graphlib_rounds(edges: list[tuple[str, list[str]]]) -> Callable[[], float]:
    def bench() -> float:
        gc.collect()  # each side starts from the same heap: no inherited collection debt
        t0 = time.perf_counter()
        sorter = graphlib.TopologicalSorter({sid: set(before) for sid, before in edges})
        sorter.prepare()
        levels = []
        while sorter.is_active():
            ready = sorter.get_ready()
            levels.append(list(ready))
            sorter.done(*ready)
        return (time.perf_counter() - t0) * 1e3

    return bench


def planner_rows(args: argparse.Namespace) -> list[Row]:
    runs = args.runs or (7 if args.quick else 21)
    n = 10_000
    steps = workload(n)
    plan = Planner().create_plan(steps)
    edges = [(sid, sorted(before)) for sid, before in plan.dependencies.items()]
    return [
        alternate(
            f"plan + validate {n:,} steps",
            "ms",
            "lower",
            plan_steps(steps),
            "dict of sets + graphlib static_order of the same graph",
            graphlib_sort(edges),
            runs,
            target="<= 100 ms",
            dependencies=sum(len(before) for _, before in edges),
        ),
        alternate(
            f"analyze_parallelism, {n:,} steps",
            "ms",
            "lower",
            analyze(plan),
            "graphlib get_ready/done rounds of the same graph",
            graphlib_rounds(edges),
            runs,
        ),
    ]


LEVELS, WIDTH = 10, 100


@tool_spec(name="noop")
async def noop_step(left: int = 0, right: int = 0) -> int:
    return left + right + 1


def fan_out_chain() -> list[PlanStep]:
    """10 levels of 100 steps; step j of a level takes the artifacts of steps j and j+1 of the
    level before (a chain of fan-outs: every level waits for the previous one)."""
    steps = []
    for level in range(LEVELS):
        for j in range(WIDTH):
            args: dict[str, Any] = {}
            if level:
                args = {
                    "left": {"$artifact": f"a{level - 1}.{j}"},
                    "right": {"$artifact": f"a{level - 1}.{(j + 1) % WIDTH}"},
                }
            steps.append(
                PlanStep(f"s{level}.{j}", noop_step, args=args, produces={f"a{level}.{j}"})
            )
    return steps


def run_executor(runner: asyncio.Runner, plan: Plan) -> Callable[[], float]:
    async def go() -> float:
        executor = Executor()
        gc.collect()  # each side starts from the same heap: no inherited collection debt
        t0 = time.perf_counter()
        artifacts = await executor.execute_plan(plan)
        took = time.perf_counter() - t0
        assert len(artifacts) == LEVELS * WIDTH
        return took / (LEVELS * WIDTH) * 1e6

    return lambda: runner.run(go())


def run_gather(runner: asyncio.Runner) -> Callable[[], float]:
    """The floor: the same DAG by hand, each level one gather of tasks over the last's values."""

    async def go() -> float:
        gc.collect()  # each side starts from the same heap: no inherited collection debt
        t0 = time.perf_counter()
        values = await asyncio.gather(*(noop_step() for _ in range(WIDTH)))
        for _ in range(1, LEVELS):
            values = await asyncio.gather(
                *(noop_step(values[j], values[(j + 1) % WIDTH]) for j in range(WIDTH))
            )
        took = time.perf_counter() - t0
        assert len(values) == WIDTH
        return took / (LEVELS * WIDTH) * 1e6

    return lambda: runner.run(go())


def executor_rows(args: argparse.Namespace) -> list[Row]:
    runs = args.runs or (9 if args.quick else 31)
    plan = Planner().create_plan(fan_out_chain())
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        run_executor(runner, plan)()  # warm up both: imports, thread-free first run
        run_gather(runner)()
        return [
            alternate(
                f"scheduling overhead per step, {LEVELS * WIDTH:,} no-op async steps",
                "us/step",
                "lower",
                run_executor(runner, plan),
                "asyncio.gather of each level over the same DAG",
                run_gather(runner),
                runs,
                target="<= 2x",
                dag=f"{LEVELS} levels of {WIDTH}",
            )
        ]


ROWS: list[Callable[[argparse.Namespace], list[Row]]] = [planner_rows, executor_rows]


def main() -> None:
    args = parse_args(__doc__ or "")
    rows: list[Row] = []
    for make in ROWS:
        rows.extend(make(args))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
