"""The planner: turn a list of steps into a validated `Plan` whose order never depends on timing.

A plan is checked whole before anything runs, and every error names what is wrong::

    plan = Planner().create_plan([
        PlanStep("extract", extract, produces={"raw"}),
        PlanStep("clean", clean, args={"rows": {"$artifact": "raw"}}, produces={"rows"}),
        PlanStep("load", load, consumes={"rows"}),
    ])
    plan.order                      # ('extract', 'clean', 'load')
    Planner().analyze_parallelism(plan)["levels"]   # [['extract'], ['clean'], ['load']]

What `create_plan` guarantees, or raises (nothing has run in either case):

- Each item is a `PlanStep` (`TypeError` names the index), step ids are unique (`DuplicateStep`),
  ``depends_on`` names known steps (`UnknownStep`), each artifact has one producer and no step
  produces an initial artifact (`DuplicateProducer`: which value a consumer got would depend on
  timing), every input (``consumes`` and ``{"$artifact": name}`` anywhere in ``args``) is produced
  by a step or is an initial artifact (`UnknownArtifact`, naming step and artifact).
- A step depends on: the producer of each of its inputs (wherever it is listed: a consumer may
  come before its producer), each step in its ``depends_on``, and, per resource, the earlier
  steps it conflicts with: a write conflicts with any other access, readers never conflict.
  Resource conflicts follow list order, so two runs of one plan order them alike.
- No cycle (`PlanCycle`; ``.cycle`` is one, first step repeated at the end, and the message
  names why each step waits for the one before it).
- ``order`` is the topological order closest to the given order: whenever several steps are
  ready, the one listed first goes first.

Cost: O((n + e) log n) for n steps and e dependencies, with e linear in the size of the input:
for each resource a step depends only on the last writer before it and, when it writes, on the
readers since that writer; every other conflict follows transitively (10,000 steps: a few ms).

`analyze_parallelism` describes a valid plan's shape (levels, critical path, bottlenecks).
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Iterable, Sequence
from types import MappingProxyType
from typing import Any

from aiotp.plans.errors import (
    DuplicateProducer,
    DuplicateStep,
    PlanCycle,
    UnknownArtifact,
    UnknownStep,
)
from aiotp.plans.plan import Plan
from aiotp.plans.step import PlanStep

__all__ = ["Planner", "create_and_validate_plan_sync"]


class Planner:
    """Builds and describes plans. It keeps no state, so one planner may serve any number of
    plans, from any thread."""

    __slots__ = ()

    def create_plan(self, steps: Iterable[PlanStep], initial_artifacts: Iterable[str] = ()) -> Plan:
        """Validate `steps` and build their dependency graph (see the module docstring).

        `initial_artifacts` names the artifacts the caller will supply at execution (a mapping's
        keys count as its names)."""
        items = _check_steps(steps)
        initial = _names_of(initial_artifacts)
        ids = [step.step_id for step in items]
        position = _positions(ids)
        producers = _producers(items, initial)
        inputs = [step.inputs for step in items]
        _check_references(items, inputs, position, producers, initial)
        deps = _dependencies(items, inputs, position, producers)
        dependents: list[list[int]] = [[] for _ in items]
        for i, before in enumerate(deps):
            for j in before:
                dependents[j].append(i)
        order = _topological_order(items, deps, dependents)
        name = ids.__getitem__
        return Plan(
            steps=items,
            by_id=MappingProxyType(dict(zip(ids, items, strict=True))),
            dependencies=MappingProxyType(
                dict(zip(ids, [frozenset(map(name, before)) for before in deps], strict=True))
            ),
            dependents=MappingProxyType(
                dict(zip(ids, [frozenset(map(name, after)) for after in dependents], strict=True))
            ),
            order=tuple(map(name, order)),
            producers=MappingProxyType({name: items[i].step_id for name, i in producers.items()}),
            initial_artifacts=initial,
        )

    def analyze_parallelism(self, plan: Plan) -> dict[str, Any]:
        """The shape of `plan`, for reports and capacity planning (it changes nothing):

        - ``total_steps``: the number of steps; ``depth``: the number of levels.
        - ``levels``: step ids by level, each in list order. A step's level is the length of the
          longest dependency chain leading to it (roots are level 0), so the steps of one level
          never depend on each other and could all run at once.
        - ``max_parallel``: the size of the largest level (0 for an empty plan).
        - ``critical_path``: one longest chain of steps, first to last; the plan takes at least
          this many steps one after another, however many run at once.
        - ``bottlenecks``: steps alone at their level that have dependents. Every step of every
          later level waits for such a step (each step at level k + 1 depends on one at level k),
          so the whole rest of the plan passes through it; each one lies on every longest chain.
          A last step is not a bottleneck: nothing waits for it.
        """
        level: dict[str, int] = {}
        parent: dict[str, str | None] = {}
        position = {step.step_id: i for i, step in enumerate(plan.steps)}
        for sid in plan.order:
            best, via = 0, None
            for dep in plan.dependencies[sid]:
                candidate = level[dep] + 1
                if candidate > best or (
                    candidate == best and via is not None and position[dep] < position[via]
                ):
                    best, via = candidate, dep
            level[sid], parent[sid] = best, via
        depth = max(level.values()) + 1 if level else 0
        levels: list[list[str]] = [[] for _ in range(depth)]
        for step in plan.steps:
            levels[level[step.step_id]].append(step.step_id)
        critical: list[str] = []
        if levels:
            node: str | None = levels[-1][0]
            while node is not None:
                critical.append(node)
                node = parent[node]
            critical.reverse()
        bottlenecks = [only[0] for only in levels if len(only) == 1 and plan.dependents[only[0]]]
        return {
            "total_steps": len(plan.steps),
            "levels": levels,
            "max_parallel": max((len(lv) for lv in levels), default=0),
            "critical_path": critical,
            "bottlenecks": bottlenecks,
            "depth": depth,
        }


def create_and_validate_plan_sync(
    steps: Iterable[PlanStep], initial_artifacts: Iterable[str] = ()
) -> Plan:
    """`Planner().create_plan(steps, initial_artifacts)`: validate without running anything.
    (Planning never waits, so it needs no event loop.)"""
    return Planner().create_plan(steps, initial_artifacts)


# Validation --------------------------------------------------------------------------------


def _check_steps(steps: Iterable[PlanStep]) -> tuple[PlanStep, ...]:
    if isinstance(steps, str | bytes) or not isinstance(steps, Iterable):
        raise TypeError(f"a plan needs an iterable of PlanStep, got {steps!r}")
    items = tuple(steps)
    for index, item in enumerate(items):
        if not isinstance(item, PlanStep):
            raise TypeError(f"plan step {index} is not a PlanStep: {item!r}")
    return items


def _names_of(initial: Iterable[str]) -> frozenset[str]:
    if isinstance(initial, str | bytes) or not isinstance(initial, Iterable):
        raise TypeError(f"initial_artifacts must be a set of names, got {initial!r}")
    names = frozenset(initial)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"initial_artifacts must hold non-empty strings, got {name!r}")
    return names


def _positions(ids: list[str]) -> dict[str, int]:
    position: dict[str, int] = {}
    for i, sid in enumerate(ids):
        first = position.setdefault(sid, i)
        if first != i:
            raise DuplicateStep(f"step id {sid!r} is used twice: by steps {first} and {i}")
    return position


def _producers(items: Sequence[PlanStep], initial: frozenset[str]) -> dict[str, int]:
    producers: dict[str, int] = {}
    for i, step in enumerate(items):
        made = step.produces
        if made.isdisjoint(initial) and producers.keys().isdisjoint(made):
            for name in made:
                producers[name] = i
            continue
        for name in sorted(made):  # sorted: the error names the same artifact every run
            if name in initial:
                raise DuplicateProducer(
                    f"step {step.step_id!r} produces artifact {name!r}, which is an initial "
                    f"artifact (the caller supplies it)"
                )
            if name in producers:
                raise DuplicateProducer(
                    f"artifact {name!r} is produced by two steps: "
                    f"{items[producers[name]].step_id!r} and {step.step_id!r}"
                )
    return producers


def _check_references(
    items: Sequence[PlanStep],
    inputs: list[frozenset[str]],
    position: dict[str, int],
    producers: dict[str, int],
    initial: frozenset[str],
) -> None:
    known = initial.union(producers)
    for step, needs in zip(items, inputs, strict=True):
        after = step.depends_on
        if after and not position.keys() >= after:
            dep = min(after - position.keys())
            raise UnknownStep(
                f"step {step.step_id!r} depends on {dep!r}, which is not a step of the "
                f"plan{_did_you_mean(dep, position)}"
            )
        if not needs <= known:
            name = min(needs - known)
            how = "consumes" if name in step.consumes else "references (in its args)"
            raise UnknownArtifact(
                f"step {step.step_id!r} {how} artifact {name!r}, which no step produces "
                f"and which is not an initial artifact{_did_you_mean(name, known)}"
            )


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# The graph ---------------------------------------------------------------------------------


def _dependencies(
    items: Sequence[PlanStep],
    inputs: list[frozenset[str]],
    position: dict[str, int],
    producers: dict[str, int],
) -> list[set[int]]:
    """deps[i]: the positions of the steps that step i waits for."""
    deps: list[set[int]] = [set() for _ in items]
    last_writer: dict[str, int] = {}
    readers: dict[str, list[int]] = {}  # of each resource, since its last writer
    for i, step in enumerate(items):
        before = deps[i]
        for name in inputs[i]:
            j = producers.get(name)
            if j is not None:
                before.add(j)
        for dep in step.depends_on:
            before.add(position[dep])
        if i in before:
            _raise_cycle(items, [i, i])
        spec = step.spec
        # Reads before writes: a step that reads and writes one resource is its writer.
        for res in spec.reads:
            if res not in spec.writes:
                j = last_writer.get(res)
                if j is not None:
                    before.add(j)
                readers.setdefault(res, []).append(i)
        for res in spec.writes:
            since = readers.pop(res, None)
            if since:
                before.update(since)  # they each wait for the last writer already
            else:
                j = last_writer.get(res)
                if j is not None:
                    before.add(j)
            last_writer[res] = i
    return deps


def _topological_order(
    items: Sequence[PlanStep], deps: list[set[int]], after: list[list[int]]
) -> list[int]:
    """Kahn's algorithm; of the ready steps the one listed first goes first, so the order is
    stable: the given order itself whenever that order is valid."""
    waiting = [len(before) for before in deps]
    ready = [i for i, count in enumerate(waiting) if count == 0]  # sorted: already a heap
    order: list[int] = []
    push, pop = heapq.heappush, heapq.heappop
    while ready:
        i = pop(ready)
        order.append(i)
        for k in after[i]:
            waiting[k] -= 1
            if waiting[k] == 0:
                push(ready, k)
    if len(order) < len(items):
        _raise_cycle(items, _find_cycle(deps, waiting))
    return order


def _find_cycle(deps: list[set[int]], waiting: list[int]) -> list[int]:
    """One cycle among the steps Kahn's algorithm left (``waiting > 0``), in run order.

    Each of them waits for another one of them (else it would have become ready), so walking
    from one to a step it waits for, always staying among them, must revisit a step: the walk
    from that step's first visit on is a cycle. Iterative and O(n + e)."""
    left = [count > 0 for count in waiting]
    start = left.index(True)
    seen: dict[int, int] = {}
    walk: list[int] = []
    node = start
    while node not in seen:
        seen[node] = len(walk)
        walk.append(node)
        node = min(j for j in deps[node] if left[j])
    cycle = walk[seen[node] :]
    cycle.reverse()  # the walk follows "waits for"; a cycle reads in run order
    first = cycle.index(min(cycle))  # start at the step listed first: the same cycle each time
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]


def _raise_cycle(items: Sequence[PlanStep], cycle: list[int]) -> None:
    ids = [items[i].step_id for i in cycle]
    why = "; ".join(_why(items, cycle[k], cycle[k + 1]) for k in range(len(cycle) - 1))
    raise PlanCycle(f"the steps' dependencies form a cycle: {' -> '.join(ids)} ({why})", ids)


def _why(items: Sequence[PlanStep], i: int, j: int) -> str:
    """Why step j waits for step i (an edge of the graph)."""
    a, b = items[i], items[j]
    reasons: list[str] = []
    for name in sorted(a.produces & b.inputs):
        reasons.append(f"{b.step_id!r} needs artifact {name!r} from {a.step_id!r}")
    if a.step_id in b.depends_on:
        reasons.append(f"{b.step_id!r} depends_on {a.step_id!r}")
    if i < j:
        clash = (a.spec.writes & b.spec.resources) | (a.spec.reads & b.spec.writes)
        for res in sorted(clash):
            reasons.append(
                f"{b.step_id!r} is listed after {a.step_id!r} and one of them writes "
                f"resource {res!r}"
            )
    return ", ".join(reasons)
