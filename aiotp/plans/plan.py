"""`Plan`: a validated set of steps and their dependency graph, ready to run.

Built by `Planner.create_plan` (planner.py), never by hand: a `Plan` is valid by construction
(unique ids, known artifacts and steps, one producer per artifact, no cycle). It is immutable,
so one plan may run many times, concurrently too.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from aiotp.plans.step import PlanStep

__all__ = ["Plan"]


@attrs.frozen
class Plan:
    """``steps`` in the order given; ``dependencies[s]``: the steps that must finish before
    ``s`` starts (data flow, ``depends_on`` and resource conflicts, which are ordered by step
    order); ``dependents`` the reverse; ``order``: a topological order, stable with respect to
    the given order; ``producers``: artifact -> the step producing it; ``initial_artifacts``:
    artifacts the caller supplies at execution."""

    steps: tuple[PlanStep, ...]
    by_id: Mapping[str, PlanStep]
    dependencies: Mapping[str, frozenset[str]]
    dependents: Mapping[str, frozenset[str]]
    order: tuple[str, ...]
    producers: Mapping[str, str]
    initial_artifacts: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.steps)
