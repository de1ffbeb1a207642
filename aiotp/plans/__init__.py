"""Plans: declared tools, validated dependency graphs, concurrent execution over pools.

See spec.py (tool contracts), step.py (steps and artifact references), planner.py (validation
and the dependency graph), executor.py (running a plan), trace.py (traces), run.py (a plan run
as a supervised actor). Exports load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiotp.plans.errors import (
        DuplicateProducer,
        DuplicateStep,
        PlanCancelled,
        PlanCycle,
        PlanError,
        PlanValidationError,
        StepFailed,
        UnknownArtifact,
        UnknownStep,
    )
    from aiotp.plans.plan import Plan
    from aiotp.plans.planner import Planner, create_and_validate_plan_sync
    from aiotp.plans.spec import LatencyClass, ToolSpec, pool_tool, tool_spec
    from aiotp.plans.step import PlanStep

_EXPORTS: dict[str, str] = {
    "DuplicateProducer": "aiotp.plans.errors",
    "DuplicateStep": "aiotp.plans.errors",
    "PlanCancelled": "aiotp.plans.errors",
    "PlanCycle": "aiotp.plans.errors",
    "PlanError": "aiotp.plans.errors",
    "PlanValidationError": "aiotp.plans.errors",
    "StepFailed": "aiotp.plans.errors",
    "UnknownArtifact": "aiotp.plans.errors",
    "UnknownStep": "aiotp.plans.errors",
    "Plan": "aiotp.plans.plan",
    "Planner": "aiotp.plans.planner",
    "create_and_validate_plan_sync": "aiotp.plans.planner",
    "LatencyClass": "aiotp.plans.spec",
    "ToolSpec": "aiotp.plans.spec",
    "pool_tool": "aiotp.plans.spec",
    "tool_spec": "aiotp.plans.spec",
    "PlanStep": "aiotp.plans.step",
}

__all__ = [
    "DuplicateProducer",
    "DuplicateStep",
    "LatencyClass",
    "Plan",
    "PlanCancelled",
    "PlanCycle",
    "PlanError",
    "PlanStep",
    "PlanValidationError",
    "Planner",
    "StepFailed",
    "ToolSpec",
    "UnknownArtifact",
    "UnknownStep",
    "create_and_validate_plan_sync",
    "pool_tool",
    "tool_spec",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiotp.plans' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
