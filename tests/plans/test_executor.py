"""Executor: the seed's patterns, real concurrency, caps, read/write locks, retries, timeouts,
failure policies and artifact references.

Concurrency is proven with barriers every party must reach (a sequential run would hang on
them) and counted by gauges inside the tools; nothing is inferred from wall-clock time.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest
from plan_helpers import SAFETY, Barrier, Gauge, Holdings, settle, until

from aiotp.plans import PlanStep, StepFailed, tool_spec
from aiotp.plans.executor import Executor
from aiotp.plans.locks import ResourceLocks
from aiotp.plans.results import StepStatus


def ref(name: str) -> dict[str, str]:
    return {"$artifact": name}


# -- the seed's patterns ---------------------------------------------------------------------


async def test_pipeline_runs_in_order_and_hands_each_result_on() -> None:
    log: list[str] = []

    @tool_spec()
    def extract() -> list[int]:
        log.append("extract")
        return [3, 1, 2]

    @tool_spec()
    async def transform(raw: list[int]) -> list[int]:
        log.append("transform")
        return sorted(raw)

    @tool_spec()
    def load(clean: list[int]) -> str:
        log.append("load")
        return f"loaded {clean}"

    artifacts = await Executor().execute_plan(
        [
            PlanStep("extract", extract, produces={"raw"}),
            PlanStep("transform", transform, args={"raw": ref("raw")}, produces={"clean"}),
            PlanStep("load", load, args={"clean": ref("clean")}, produces={"result"}),
        ]
    )
    assert artifacts == {"raw": [3, 1, 2], "clean": [1, 2, 3], "result": "loaded [1, 2, 3]"}
    assert log == ["extract", "transform", "load"]


async def test_fan_out_steps_all_run_at_once_and_fan_in_gets_every_result() -> None:
    sources = ["api1", "api2", "api3", "api4"]
    barrier = Barrier(len(sources))
    gauge = Gauge()

    @tool_spec(idempotent=True)
    async def fetch(source: str) -> str:
        with gauge:
            await barrier.wait()  # all four are in here at once, or this hangs
        return f"data from {source}"

    @tool_spec()
    def combine(**parts: str) -> list[str]:
        return sorted(parts.values())

    steps = [
        PlanStep(f"fetch_{s}", fetch, args={"source": s}, produces={f"d_{s}"}) for s in sources
    ]
    steps.append(
        PlanStep(
            "combine", combine, args={f"d_{s}": ref(f"d_{s}") for s in sources}, produces={"all"}
        )
    )
    executor = Executor()
    artifacts = await executor.execute_plan(steps)
    assert artifacts["all"] == sorted(f"data from {s}" for s in sources)
    assert gauge.max == len(sources)
    combine_start = next(e for e in executor.get_trace() if e["step_id"] == "combine")["start"]
    for entry in executor.get_trace():
        if entry["step_id"] != "combine":
            assert entry["start"] + entry["duration"] <= combine_start


async def test_diamond_runs_its_two_middle_steps_concurrently() -> None:
    middle = Barrier(2)
    seen: dict[str, Any] = {}

    @tool_spec()
    async def fetch_config() -> dict[str, int]:
        return {"scale": 10}

    @tool_spec()
    async def analyze(config: dict[str, int], what: str) -> int:
        await middle.wait()  # both analyses are running, or this hangs
        return config["scale"] * (1 if what == "users" else 2)

    @tool_spec()
    def report(users: int, products: int) -> str:
        seen["report"] = (users, products)
        return f"{users}/{products}"

    artifacts = await Executor().execute_plan(
        [
            PlanStep("fetch", fetch_config, produces={"config"}),
            PlanStep(
                "users", analyze, args={"config": ref("config"), "what": "users"}, produces={"u"}
            ),
            PlanStep(
                "products",
                analyze,
                args={"config": ref("config"), "what": "products"},
                produces={"p"},
            ),
            PlanStep(
                "report", report, args={"users": ref("u"), "products": ref("p")}, produces={"r"}
            ),
        ]
    )
    assert artifacts["r"] == "10/20" and seen["report"] == (10, 20)


async def test_sync_steps_run_in_threads_concurrently() -> None:
    both = threading.Barrier(2, timeout=SAFETY)  # two threads at once, or BrokenBarrierError

    @tool_spec()
    def blocking(n: int) -> int:
        both.wait()
        return n

    artifacts = await Executor().execute_plan(
        [PlanStep(f"s{i}", blocking, args={"n": i}, produces={f"a{i}"}) for i in range(2)]
    )
    assert artifacts == {"a0": 0, "a1": 1}


# -- caps and resources ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_twenty_steps_of_a_tool_capped_at_five_never_run_more_than_five(kind: str) -> None:
    gauge = Gauge()
    five_in = asyncio.Event()
    five_in_threads = threading.Event()
    loop = asyncio.get_running_loop()

    def arrive() -> None:
        if gauge.now == 5:
            loop.call_soon_threadsafe(five_in.set)
            five_in_threads.set()

    if kind == "async":

        @tool_spec(concurrency_cap=5)
        async def call_api(i: int) -> int:
            with gauge:
                arrive()
                async with asyncio.timeout(SAFETY):
                    await five_in.wait()  # the first five hold until all five are in
                await asyncio.sleep(0)
            return i

        tool: Any = call_api
    else:

        @tool_spec(concurrency_cap=5)
        def call_api_sync(i: int) -> int:
            with gauge:
                arrive()
                assert five_in_threads.wait(SAFETY)
            return i

        tool = call_api_sync

    steps = [PlanStep(f"call_{i}", tool, args={"i": i}, produces={f"r{i}"}) for i in range(20)]
    artifacts = await Executor(threads=8).execute_plan(steps)
    assert artifacts == {f"r{i}": i for i in range(20)}
    assert gauge.max == 5 and gauge.entered == 20


async def test_readers_of_a_resource_overlap_within_one_plan() -> None:
    holdings = Holdings()
    readers = Barrier(3)

    @tool_spec(reads={"R"})
    async def read(i: int) -> int:
        holdings.enter(f"read{i}", {"R"}, ())
        try:
            await readers.wait()
        finally:
            holdings.leave({"R"}, ())
        return i

    await Executor().execute_plan([PlanStep(f"r{i}", read, args={"i": i}) for i in range(3)])
    assert holdings.max_readers["R"] == 3 and not holdings.violations


async def test_within_one_plan_a_writer_is_ordered_between_the_readers_listed_around_it() -> None:
    holdings = Holdings()
    order: list[str] = []

    def make(name: str, reads: set[str], writes: set[str]) -> Any:
        @tool_spec(reads=reads, writes=writes, name=name)
        async def tool(who: str) -> None:
            holdings.enter(who, reads, writes)
            order.append(who)
            await settle()  # give anyone who could wrongly overlap every chance to
            holdings.leave(reads, writes)

        return tool

    read, write = make("read", {"R"}, set()), make("write", set(), {"R"})
    steps = [
        PlanStep("r1", read, args={"who": "r1"}),
        PlanStep("r2", read, args={"who": "r2"}),
        PlanStep("w", write, args={"who": "w"}),
        PlanStep("r3", read, args={"who": "r3"}),
    ]
    await Executor().execute_plan(steps)
    assert not holdings.violations
    assert set(order[:2]) == {"r1", "r2"} and order[2:] == ["w", "r3"]


async def test_another_plans_writer_waits_for_readers_and_later_readers_wait_for_it() -> None:
    """Two plans share a ResourceLocks: plan A's readers hold R; plan B's writer must wait for
    them; plan C's reader, arriving while the writer waits, must not overtake it."""
    locks = ResourceLocks()
    holdings = Holdings()
    readers_in = Barrier(2)
    release_readers = asyncio.Event()
    order: list[str] = []

    @tool_spec(reads={"R"})
    async def read_held(who: str) -> None:
        holdings.enter(who, {"R"}, ())
        order.append(who)
        try:
            await readers_in.wait()
            await release_readers.wait()
        finally:
            holdings.leave({"R"}, ())

    @tool_spec(writes={"R"})
    async def write(who: str) -> None:
        holdings.enter(who, (), {"R"})
        order.append(who)
        await settle()
        holdings.leave((), {"R"})

    @tool_spec(reads={"R"})
    async def read(who: str) -> None:
        holdings.enter(who, {"R"}, ())
        order.append(who)
        holdings.leave({"R"}, ())

    plan_a = asyncio.create_task(
        Executor(locks=locks).execute_plan(
            [PlanStep(f"a{i}", read_held, args={"who": f"a{i}"}) for i in range(2)]
        )
    )
    await until(readers_in.full.is_set)
    plan_b = asyncio.create_task(
        Executor(locks=locks).execute_plan([PlanStep("w", write, args={"who": "w"})])
    )
    await until(lambda: locks.statistics().waiting == 1)
    plan_c = asyncio.create_task(
        Executor(locks=locks).execute_plan([PlanStep("c", read, args={"who": "c"})])
    )
    await until(lambda: locks.statistics().waiting == 2)
    await settle()
    assert order == ["a0", "a1"] or order == ["a1", "a0"]  # neither writer nor late reader in
    release_readers.set()
    await asyncio.gather(plan_a, plan_b, plan_c)
    assert order[2:] == ["w", "c"]
    assert not holdings.violations


# -- retries ---------------------------------------------------------------------------------


def flaky(failures: int, *, idempotent: bool, **spec: Any) -> tuple[Any, list[int]]:
    """A tool that fails its first `failures` calls, then returns how many calls it took."""
    calls: list[int] = []

    @tool_spec(idempotent=idempotent, **spec)
    async def tool() -> int:
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            raise ConnectionError(f"flake {len(calls)}")
        return len(calls)

    return tool, calls


async def test_an_idempotent_tool_failing_twice_is_retried_and_its_attempts_are_recorded() -> None:
    tool, calls = flaky(2, idempotent=True)
    executor = Executor(max_retries=3, backoff=0)
    artifacts = await executor.execute_plan([PlanStep("s", tool, produces={"x"})])
    assert artifacts == {"x": 3} and calls == [1, 2, 3]
    result = executor.get_results()["s"]
    assert result.attempts == 3 and result.status is StepStatus.DONE
    trace = executor.get_trace()
    assert [(e["attempt"], e["status"]) for e in trace] == [(1, "error"), (2, "error"), (3, "ok")]
    assert trace[0]["error"] == "ConnectionError: flake 1"


async def test_a_tool_not_declared_idempotent_fails_at_its_first_error() -> None:
    tool, calls = flaky(2, idempotent=False)
    executor = Executor(max_retries=3, backoff=0)
    with pytest.raises(StepFailed) as caught:
        await executor.execute_plan([PlanStep("s", tool, produces={"x"})])
    assert calls == [1]
    assert caught.value.step_id == "s" and isinstance(caught.value.__cause__, ConnectionError)
    assert executor.get_results()["s"].attempts == 1
    assert executor.get_results()["s"].status is StepStatus.FAILED
    assert len(executor.get_trace()) == 1


async def test_max_retries_bounds_the_attempts_of_an_idempotent_tool() -> None:
    tool, calls = flaky(100, idempotent=True)
    executor = Executor(max_retries=2, backoff=0)
    with pytest.raises(StepFailed) as caught:
        await executor.execute_plan([PlanStep("s", tool, produces={"x"})])
    assert calls == [1, 2, 3]  # the first attempt and two retries
    assert str(caught.value.error) == "flake 3"
    assert [e["status"] for e in executor.get_trace()] == ["error"] * 3
    none_tool, none_calls = flaky(100, idempotent=True)
    with pytest.raises(StepFailed):
        await Executor(max_retries=0).execute_plan([PlanStep("s", none_tool)])
    assert none_calls == [1]


async def test_backoff_holds_neither_the_resources_nor_the_cap() -> None:
    """While a step backs off (for a minute here), another plan writes its resource and another
    step of its capped tool runs; then the backing-off run is cancelled."""
    locks = ResourceLocks()
    failed = asyncio.Event()
    calls: list[str] = []

    @tool_spec(writes={"R"}, idempotent=True, concurrency_cap=1)
    async def fails_first(who: str) -> str:
        calls.append(who)
        if who == "first":
            failed.set()
            raise ConnectionError("flake")
        return who

    @tool_spec(writes={"R"})
    async def other_writer() -> str:
        return "wrote"

    executor = Executor(locks=locks, backoff=60.0, max_backoff=60.0)
    run = asyncio.create_task(
        executor.execute_plan([PlanStep("first", fails_first, args={"who": "first"})])
    )
    await until(failed.is_set)
    await until(lambda: locks.statistics().holding == 0)
    other = await Executor(locks=locks).execute_plan([PlanStep("o", other_writer, produces={"o"})])
    assert other == {"o": "wrote"}
    # The cap too: same executor, same tool, another plan-less call through the semaphore.
    async with executor._cap(fails_first.__tool_spec__):
        pass
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert calls == ["first"]
    assert executor.get_results()["first"].status is StepStatus.CANCELLED


# -- timeouts --------------------------------------------------------------------------------


async def test_an_async_tool_past_its_timeout_is_cancelled_and_its_finally_runs() -> None:
    cleaned = asyncio.Event()

    @tool_spec(timeout=0.05)
    async def hangs() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    executor = Executor()
    with pytest.raises(StepFailed) as caught:
        await executor.execute_plan([PlanStep("h", hangs)])
    assert cleaned.is_set()
    assert caught.value.step_id == "h"
    assert isinstance(caught.value.error, TimeoutError)
    assert isinstance(caught.value.__cause__, TimeoutError)
    [entry] = executor.get_trace()
    assert entry["status"] == "timeout"
    assert executor.get_results()["h"].status is StepStatus.FAILED


async def test_the_executors_default_timeout_applies_to_a_tool_without_one() -> None:
    @tool_spec()
    async def hangs() -> None:
        await asyncio.Event().wait()

    executor = Executor(default_timeout=0.05)
    with pytest.raises(StepFailed) as caught:
        await executor.execute_plan([PlanStep("h", hangs)])
    assert isinstance(caught.value.error, TimeoutError)


async def test_a_sync_tool_past_its_timeout_fails_the_step_and_its_thread_finishes_later() -> None:
    release = threading.Event()
    finished = threading.Event()

    @tool_spec(timeout=0.05)
    def blocks() -> str:
        try:
            release.wait(SAFETY)
            return "late"
        finally:
            finished.set()

    executor = Executor()
    with pytest.raises(StepFailed) as caught:
        await executor.execute_plan([PlanStep("b", blocks, produces={"x"})])
    assert isinstance(caught.value.error, TimeoutError)
    assert caught.value.artifacts == {}
    assert not finished.is_set()  # the thread is still in the tool
    release.set()
    await until(finished.is_set)
    assert executor.artifacts == {}  # its late result is dropped
    assert executor.get_trace()[0]["status"] == "timeout"


# -- failure policies ------------------------------------------------------------------------


def failure_plan(events: dict[str, asyncio.Event], started: list[str]) -> list[PlanStep]:
    """early -> (slow || bad); slow -> after_slow; bad -> after_bad; other -> other2."""

    @tool_spec()
    async def early() -> str:
        started.append("early")
        return "e"

    @tool_spec()
    async def slow(e: str) -> str:
        started.append("slow")
        events["slow_in"].set()
        try:
            await events["slow_go"].wait()
        finally:
            events["slow_cleaned"].set()
        return "s"

    @tool_spec()
    async def bad(e: str) -> None:
        started.append("bad")
        await events["slow_in"].wait()
        await events["others_done"].wait()
        raise ValueError("bad input")

    @tool_spec()
    async def step(name: str, **_: Any) -> str:
        started.append(name)
        if name == "other2":
            events["others_done"].set()
        return name

    return [
        PlanStep("early", early, produces={"e"}),
        PlanStep("slow", slow, args={"e": ref("e")}, produces={"s"}),
        PlanStep("bad", bad, args={"e": ref("e")}, produces={"b"}),
        PlanStep("after_slow", step, args={"name": "after_slow", "s": ref("s")}),
        PlanStep("after_bad", step, args={"name": "after_bad", "b": ref("b")}, produces={"ab"}),
        PlanStep("other", step, args={"name": "other"}, produces={"o"}),
        PlanStep("other2", step, args={"name": "other2", "o": ref("o")}, produces={"o2"}),
    ]


def new_events() -> dict[str, asyncio.Event]:
    return {k: asyncio.Event() for k in ("slow_in", "slow_go", "slow_cleaned", "others_done")}


async def test_stop_policy_cancels_running_steps_skips_dependents_keeps_partial_artifacts() -> None:
    events, started = new_events(), []
    executor = Executor(failure_policy="stop")
    with pytest.raises(StepFailed) as caught:
        await executor.execute_plan(failure_plan(events, started))
    assert caught.value.step_id == "bad" and isinstance(caught.value.__cause__, ValueError)
    assert "bad" in str(caught.value)
    assert caught.value.artifacts == {"e": "e", "o": "other", "o2": "other2"}
    assert events["slow_cleaned"].is_set()  # the running step was cancelled: its finally ran
    assert "after_slow" not in started and "after_bad" not in started
    status = {k: r.status for k, r in executor.get_results().items()}
    assert status["slow"] is StepStatus.CANCELLED
    assert status["bad"] is StepStatus.FAILED
    assert status["after_slow"] is StepStatus.SKIPPED
    assert status["after_bad"] is StepStatus.SKIPPED
    assert [e["status"] for e in executor.get_trace() if e["step_id"] == "slow"] == ["cancelled"]


async def test_continue_policy_finishes_independent_branches_and_skips_only_dependents() -> None:
    events, started = new_events(), []
    executor = Executor(failure_policy="continue")
    run = asyncio.create_task(executor.execute_plan(failure_plan(events, started)))
    await until(lambda: "bad" in executor.get_results())
    await until(lambda: executor.get_results()["bad"].status is StepStatus.FAILED)
    await settle()
    assert not run.done()  # slow is still running: the plan goes on
    events["slow_go"].set()
    with pytest.raises(StepFailed) as caught:
        await run
    assert caught.value.step_id == "bad"
    assert caught.value.artifacts == {"e": "e", "s": "s", "o": "other", "o2": "other2"}
    status = {k: r.status.value for k, r in executor.get_results().items()}
    assert status == {
        "early": "done",
        "slow": "done",
        "bad": "failed",
        "after_slow": "done",
        "after_bad": "skipped",
        "other": "done",
        "other2": "done",
    }
    assert "after_bad" not in started


async def test_two_steps_failing_in_one_turn_leave_no_unretrieved_task_exception() -> None:
    """Under "stop", the first failure wins; the second, done in the same turn, is not left as
    a task whose exception nobody retrieved (asyncio logs that at ERROR when it is collected)."""

    @tool_spec()
    async def fails(n: int) -> None:
        raise ValueError(f"fail {n}")

    async def run() -> str:
        try:
            await Executor().execute_plan(
                [PlanStep(f"f{i}", fails, args={"n": i}) for i in range(3)]
            )
        except StepFailed as exc:
            return exc.step_id
        raise AssertionError("the plan did not fail")

    assert await run() == "f0"  # ties go to plan order
    await settle()
    gc.collect()  # the tasks (and any exception nobody retrieved) are collected now


# -- artifacts -------------------------------------------------------------------------------


async def test_nested_references_in_lists_dicts_and_tuples_are_resolved() -> None:
    got: dict[str, Any] = {}

    @tool_spec()
    def make(n: int) -> int:
        return n

    @tool_spec()
    def use(items: list[Any], mapping: dict[str, Any], pair: tuple[Any, ...]) -> None:
        got.update(items=items, mapping=mapping, pair=pair)

    await Executor().execute_plan(
        [
            PlanStep("a", make, args={"n": 1}, produces={"a"}),
            PlanStep("b", make, args={"n": 2}, produces={"b"}),
            PlanStep(
                "use",
                use,
                args={
                    "items": [ref("a"), [ref("b"), {"deep": ref("a")}], "plain"],
                    "mapping": {"k": ref("b"), "nested": {"list": [ref("a")]}},
                    "pair": (ref("a"), (ref("b"), 3)),
                },
            ),
        ]
    )
    assert got["items"] == [1, [2, {"deep": 1}], "plain"]
    assert got["mapping"] == {"k": 2, "nested": {"list": [1]}}
    assert got["pair"] == (1, (2, 3)) and isinstance(got["pair"][1], tuple)


async def test_initial_artifacts_are_referenced_like_produced_ones() -> None:
    @tool_spec()
    def double(x: int) -> int:
        return 2 * x

    artifacts = await Executor().execute_plan(
        [PlanStep("d", double, args={"x": ref("input")}, produces={"out"})],
        initial_artifacts={"input": 21},
    )
    assert artifacts == {"input": 21, "out": 42}


@pytest.mark.parametrize(
    ("returned", "error"),
    [({"a": 1, "b": 2, "extra": 3}, None), ([1, 2], TypeError), ({"a": 1}, KeyError)],
)
async def test_a_step_producing_several_artifacts_must_return_a_mapping_of_them(
    returned: Any, error: type[Exception] | None
) -> None:
    @tool_spec()
    def several() -> Any:
        return returned

    executor = Executor()
    steps = [PlanStep("s", several, produces={"a", "b"})]
    if error is None:
        assert await executor.execute_plan(steps) == {"a": 1, "b": 2}
        return
    with pytest.raises(StepFailed) as caught:
        await executor.execute_plan(steps)
    assert isinstance(caught.value.__cause__, error)
    assert "'s'" in str(caught.value.__cause__) and caught.value.artifacts == {}
