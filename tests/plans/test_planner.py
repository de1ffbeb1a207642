"""The planner: every validation error names what is wrong, dependencies come from data flow,
``depends_on`` and resource conflicts (ordered by list order), and the graph never depends on
timing."""

from __future__ import annotations

import graphlib
import itertools
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from aiotp.plans import (
    DuplicateProducer,
    DuplicateStep,
    Plan,
    PlanCycle,
    Planner,
    PlanStep,
    PlanValidationError,
    UnknownArtifact,
    UnknownStep,
    create_and_validate_plan_sync,
    tool_spec,
)


def step(sid: str, *, reads: Iterable[str] = (), writes: Iterable[str] = (), **kw: Any) -> PlanStep:
    fn = tool_spec(reads=set(reads), writes=set(writes), name=f"tool_{sid}")(lambda **_: None)
    return PlanStep(sid, fn, **kw)


def plan_of(*steps: PlanStep, initial: Iterable[str] = ()) -> Plan:
    return Planner().create_plan(steps, initial_artifacts=initial)


def deps(plan: Plan) -> dict[str, set[str]]:
    return {sid: set(before) for sid, before in plan.dependencies.items() if before}


# Validation ---------------------------------------------------------------------------------


def test_a_non_step_is_a_type_error_naming_its_index() -> None:
    with pytest.raises(TypeError, match=r"plan step 1 is not a PlanStep: \{'step_id': 'b'\}"):
        Planner().create_plan([step("a"), {"step_id": "b"}])  # type: ignore[list-item]


def test_duplicate_step_ids_name_the_id_and_both_positions() -> None:
    with pytest.raises(DuplicateStep, match=r"step id 'a' is used twice: by steps 0 and 2"):
        plan_of(step("a"), step("b"), step("a"))


def test_depends_on_an_unknown_step_names_both_steps() -> None:
    with pytest.raises(UnknownStep) as err:
        plan_of(step("fetch"), step("load", depends_on={"fetc"}))
    assert str(err.value) == (
        "step 'load' depends on 'fetc', which is not a step of the plan (did you mean 'fetch'?)"
    )


def test_an_unproduced_consumed_artifact_names_the_step_and_the_artifact() -> None:
    with pytest.raises(UnknownArtifact) as err:
        plan_of(step("a", produces={"users"}), step("b", consumes={"usres"}))
    assert str(err.value) == (
        "step 'b' consumes artifact 'usres', which no step produces and which is not an initial "
        "artifact (did you mean 'users'?)"
    )


def test_an_unproduced_reference_in_nested_args_is_unknown_too() -> None:
    bad = step("b", args={"rows": [{"deep": ({"$artifact": "ghost"},)}]})
    with pytest.raises(UnknownArtifact, match=r"step 'b' references \(in its args\) artifact "):
        plan_of(step("a"), bad)


def test_initial_artifacts_satisfy_consumers() -> None:
    plan = plan_of(step("a", consumes={"seed"}, produces={"x"}), initial={"seed"})
    assert plan.initial_artifacts == {"seed"}
    assert plan.producers == {"x": "a"}
    assert deps(plan) == {}


def test_two_producers_of_one_artifact_are_named() -> None:
    with pytest.raises(DuplicateProducer) as err:
        plan_of(step("a", produces={"x"}), step("b"), step("c", produces={"x", "y"}))
    assert str(err.value) == "artifact 'x' is produced by two steps: 'a' and 'c'"


def test_producing_an_initial_artifact_is_a_duplicate_producer() -> None:
    with pytest.raises(DuplicateProducer) as err:
        plan_of(step("a", produces={"seed"}), initial={"seed"})
    assert str(err.value) == (
        "step 'a' produces artifact 'seed', which is an initial artifact (the caller supplies it)"
    )


def test_a_step_depending_on_itself_is_a_cycle_of_one() -> None:
    with pytest.raises(PlanCycle) as err:
        plan_of(step("a", depends_on={"a"}))
    assert err.value.cycle == ["a", "a"]
    assert str(err.value) == "the steps' dependencies form a cycle: a -> a ('a' depends_on 'a')"


def test_a_step_consuming_its_own_artifact_is_a_cycle_of_one() -> None:
    with pytest.raises(PlanCycle, match=r"a -> a \('a' needs artifact 'x' from 'a'\)") as err:
        plan_of(step("a", consumes={"x"}, produces={"x"}))
    assert err.value.cycle == ["a", "a"]


def test_a_data_flow_cycle_is_named_from_the_step_listed_first() -> None:
    with pytest.raises(PlanCycle) as err:
        plan_of(
            step("ok"),
            step("c", consumes={"b_out"}, produces={"c_out"}),
            step("a", consumes={"c_out"}, produces={"a_out"}),
            step("b", consumes={"a_out"}, produces={"b_out"}),
        )
    assert err.value.cycle == ["c", "a", "b", "c"]
    assert isinstance(err.value, PlanValidationError) and isinstance(err.value, ValueError)
    assert str(err.value) == (
        "the steps' dependencies form a cycle: c -> a -> b -> c ('a' needs artifact 'c_out' "
        "from 'c'; 'b' needs artifact 'a_out' from 'a'; 'c' needs artifact 'b_out' from 'b')"
    )


def test_data_flow_against_resource_order_is_a_cycle_that_names_the_resource() -> None:
    # a is listed first and both write db, so b waits for a; but a needs b's artifact.
    with pytest.raises(PlanCycle) as err:
        plan_of(step("a", writes={"db"}, consumes={"x"}), step("b", writes={"db"}, produces={"x"}))
    assert err.value.cycle == ["a", "b", "a"]
    assert "'b' is listed after 'a' and one of them writes resource 'db'" in str(err.value)
    assert "'a' needs artifact 'x' from 'b'" in str(err.value)


def test_a_cycle_through_10000_steps_is_found_without_recursion() -> None:
    n = 10_000
    steps = [step(f"s{i}", consumes={f"x{(i - 1) % n}"}, produces={f"x{i}"}) for i in range(n)]
    with pytest.raises(PlanCycle) as err:
        Planner().create_plan(steps)
    assert err.value.cycle == [f"s{i}" for i in range(n)] + ["s0"]


# Data flow and the seed's patterns ------------------------------------------------------------


def test_pipeline_runs_one_after_another() -> None:
    plan = create_and_validate_plan_sync(
        [
            step("extract", produces={"raw"}),
            step("transform", consumes={"raw"}, produces={"clean"}),
            step("load", args={"rows": {"$artifact": "clean"}}, produces={"result"}),
        ]
    )
    assert deps(plan) == {"transform": {"extract"}, "load": {"transform"}}
    assert plan.dependents["extract"] == {"transform"}
    assert plan.order == ("extract", "transform", "load")
    analysis = Planner().analyze_parallelism(plan)
    assert analysis == {
        "total_steps": 3,
        "levels": [["extract"], ["transform"], ["load"]],
        "max_parallel": 1,
        "critical_path": ["extract", "transform", "load"],
        "bottlenecks": ["extract", "transform"],
        "depth": 3,
    }


def test_fan_out_fan_in_runs_the_fetches_together() -> None:
    sources = ["api1", "api2", "api3"]
    fetches = [step(f"fetch_{s}", produces={f"data_{s}"}) for s in sources]
    combine = step(
        "combine",
        args={f"data_{s}": {"$artifact": f"data_{s}"} for s in sources},
        produces={"combined"},
    )
    plan = plan_of(*fetches, combine)
    assert deps(plan) == {"combine": {f"fetch_{s}" for s in sources}}
    analysis = Planner().analyze_parallelism(plan)
    assert analysis["levels"] == [[f"fetch_{s}" for s in sources], ["combine"]]
    assert analysis["max_parallel"] == 3
    assert analysis["bottlenecks"] == []  # nothing waits for combine
    assert analysis["critical_path"] == ["fetch_api1", "combine"]


def test_diamond_runs_the_middle_together() -> None:
    plan = plan_of(
        step("fetch", produces={"config"}),
        step("analyze_users", consumes={"config"}, produces={"user_stats"}),
        step("analyze_products", consumes={"config"}, produces={"product_stats"}),
        step("report", consumes={"user_stats", "product_stats"}, produces={"final_report"}),
    )
    assert deps(plan) == {
        "analyze_users": {"fetch"},
        "analyze_products": {"fetch"},
        "report": {"analyze_users", "analyze_products"},
    }
    analysis = Planner().analyze_parallelism(plan)
    assert analysis["levels"] == [["fetch"], ["analyze_users", "analyze_products"], ["report"]]
    assert analysis["bottlenecks"] == ["fetch"]
    assert analysis["depth"] == 3 and analysis["max_parallel"] == 2


def test_a_consumer_listed_before_its_producer_waits_for_it() -> None:
    plan = plan_of(step("use", consumes={"x"}), step("other"), step("make", produces={"x"}))
    assert deps(plan) == {"use": {"make"}}
    assert plan.order == ("other", "make", "use")


def test_nested_artifact_references_count_as_inputs() -> None:
    plan = plan_of(
        step("a", produces={"x"}),
        step("b", produces={"y"}),
        step(
            "c", args={"n": 1, "deep": [{"k": ({"$artifact": "x"}, "s")}], "y": {"$artifact": "y"}}
        ),
    )
    assert deps(plan) == {"c": {"a", "b"}}


def test_the_plans_mappings_are_read_only() -> None:
    plan = plan_of(step("a"))
    with pytest.raises(TypeError):
        plan.dependencies["a"] = frozenset({"b"})  # type: ignore[index]


def test_an_empty_plan_has_no_levels() -> None:
    plan = plan_of()
    assert plan.order == () and len(plan) == 0
    assert Planner().analyze_parallelism(plan) == {
        "total_steps": 0,
        "levels": [],
        "max_parallel": 0,
        "critical_path": [],
        "bottlenecks": [],
        "depth": 0,
    }


# Resources ----------------------------------------------------------------------------------


def test_a_reader_after_a_writer_waits_for_it() -> None:
    assert deps(plan_of(step("w", writes={"db"}), step("r", reads={"db"}))) == {"r": {"w"}}


def test_a_writer_after_a_reader_waits_for_it() -> None:
    assert deps(plan_of(step("r", reads={"db"}), step("w", writes={"db"}))) == {"w": {"r"}}


def test_two_writers_run_in_list_order() -> None:
    plan = plan_of(step("w2", writes={"db"}), step("w1", writes={"db"}))
    assert deps(plan) == {"w1": {"w2"}}
    assert plan.order == ("w2", "w1")


def test_readers_never_wait_for_each_other() -> None:
    plan = plan_of(step("r1", reads={"db"}), step("r2", reads={"db"}), step("r3", reads={"db"}))
    assert deps(plan) == {}
    assert Planner().analyze_parallelism(plan)["levels"] == [["r1", "r2", "r3"]]


def test_conflicts_are_reduced_to_last_writer_and_readers_since() -> None:
    plan = plan_of(
        step("w1", writes={"db"}),
        step("r1", reads={"db"}),
        step("r2", reads={"db"}),
        step("w2", writes={"db"}),
        step("w3", reads={"db"}, writes={"db"}),  # reads and writes: a writer
        step("r3", reads={"db", "other"}),
    )
    assert deps(plan) == {
        "r1": {"w1"},
        "r2": {"w1"},
        "w2": {"r1", "r2"},
        "w3": {"w2"},
        "r3": {"w3"},
    }


def test_steps_on_different_resources_are_independent() -> None:
    plan = plan_of(step("a", writes={"db"}), step("b", writes={"cache"}), step("c", reads={"x"}))
    assert deps(plan) == {}


# Properties on random plans ----------------------------------------------------------------

RESOURCES = ["r0", "r1", "r2", "r3"]


@st.composite
def random_steps(draw: st.DrawFn) -> list[PlanStep]:
    """Steps whose data flow and depends_on follow a random rank (so they alone are acyclic),
    listed in another random order, with random resources: resource order follows the list,
    so some draws have cycles and the test checks both outcomes."""
    n = draw(st.integers(1, 18))
    rank = draw(st.permutations(range(n)))
    makes = [draw(st.booleans()) for _ in range(n)]
    steps = []
    for i in range(n):
        earlier = [j for j in range(n) if rank[j] < rank[i]]
        sources = draw(st.lists(st.sampled_from(earlier), max_size=3)) if earlier else []
        consumes, args = set(), {}
        for k, j in enumerate(sources):
            name = f"x{j}" if makes[j] else "seed"
            if draw(st.booleans()):
                consumes.add(name)
            else:
                args[f"a{k}"] = [{"nested": ({"$artifact": name},)}]
        after = draw(st.sets(st.sampled_from(earlier), max_size=2)) if earlier else set()
        resources = st.sets(st.sampled_from(RESOURCES), max_size=2)
        steps.append(
            step(
                f"s{i}",
                reads=draw(resources),
                writes=draw(resources) if draw(st.integers(0, 3)) == 0 else (),
                consumes=consumes,
                args=args,
                produces={f"x{i}"} if makes[i] else None,
                depends_on={f"s{j}" for j in after},
            )
        )
    return steps


def naive_graph(steps: list[PlanStep]) -> dict[str, set[str]]:
    """Every dependency by definition, conflicts between all pairs included (O(n^2))."""
    producer = {name: s.step_id for s in steps for name in s.produces}
    graph: dict[str, set[str]] = {}
    for i, b in enumerate(steps):
        edges = {producer[name] for name in b.inputs if name in producer} | set(b.depends_on)
        for a in steps[:i]:
            if conflict(a, b):
                edges.add(a.step_id)
        graph[b.step_id] = edges
    return graph


def conflict(a: PlanStep, b: PlanStep) -> bool:
    return bool(a.spec.writes & b.spec.resources or a.spec.reads & b.spec.writes)


def reachable(plan: Plan, sid: str) -> set[str]:
    """The steps that (transitively) wait for `sid`."""
    seen, todo = set(), [sid]
    while todo:
        for nxt in plan.dependents[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def is_acyclic(graph: dict[str, set[str]]) -> bool:
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return False
    return True


def assert_real_cycle(cycle: list[str], graph: dict[str, set[str]]) -> None:
    assert len(cycle) >= 2 and cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1
    for before, after in itertools.pairwise(cycle):
        assert before in graph[after], (before, after)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_steps())
def test_random_plans_are_ordered_by_data_flow_and_by_list_order_on_conflicts(
    steps: list[PlanStep],
) -> None:
    graph = naive_graph(steps)
    event("cyclic" if not is_acyclic(graph) else "acyclic")
    if not is_acyclic(graph):
        with pytest.raises(PlanCycle) as err:
            plan_of(*steps, initial={"seed"})
        assert_real_cycle(err.value.cycle, graph)
        return
    plan = plan_of(*steps, initial={"seed"})
    at = {sid: k for k, sid in enumerate(plan.order)}
    assert sorted(at) == sorted(s.step_id for s in steps)
    for sid, before in plan.dependencies.items():
        assert before <= graph[sid]  # nothing the definition does not ask for
        assert all(at[dep] < at[sid] for dep in before)
        assert all(sid in plan.dependents[dep] for dep in before)
    for s in steps:
        for name in s.inputs - {"seed"}:
            assert at[plan.producers[name]] < at[s.step_id]
    for i, b in enumerate(steps):
        for a in steps[:i]:
            if conflict(a, b):
                assert b.step_id in reachable(plan, a.step_id)
    position = {s.step_id: k for k, s in enumerate(steps)}
    if all(position[dep] < position[sid] for sid in graph for dep in graph[sid]):
        assert plan.order == tuple(position)  # stable: the given order when it is valid
    analysis = Planner().analyze_parallelism(plan)
    level = {sid: k for k, ids in enumerate(analysis["levels"]) for sid in ids}
    for sid, before in plan.dependencies.items():
        assert level[sid] == max((level[d] + 1 for d in before), default=0)
    path = analysis["critical_path"]
    assert len(path) == analysis["depth"]
    assert all(a in plan.dependencies[b] for a, b in itertools.pairwise(path))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_steps(), st.data())
def test_a_back_edge_makes_a_cycle_that_is_named(
    steps: list[PlanStep], data: st.DataObject
) -> None:
    graph = naive_graph(steps)
    assume(is_acyclic(graph))
    plan = plan_of(*steps, initial={"seed"})
    pairs = [(a, b) for a in plan.order for b in sorted(reachable(plan, a))]
    assume(pairs)
    first, later = data.draw(st.sampled_from(pairs))
    # `later` waits for `first`; make `first` wait for `later` too.
    changed = [
        PlanStep(
            s.step_id,
            s.tool,
            args=s.args,
            consumes=s.consumes,
            produces=s.produces,
            depends_on=s.depends_on | {later},
        )
        if s.step_id == first
        else s
        for s in steps
    ]
    with pytest.raises(PlanCycle) as err:
        plan_of(*changed, initial={"seed"})
    assert_real_cycle(err.value.cycle, naive_graph(changed))
    assert " -> ".join(err.value.cycle) in str(err.value)


def test_the_plans_package_exports_what_it_lists() -> None:
    import aiotp.plans

    missing = [name for name in aiotp.plans.__all__ if not hasattr(aiotp.plans, name)]
    assert not missing and aiotp.plans.__all__ == sorted(aiotp.plans.__all__)
