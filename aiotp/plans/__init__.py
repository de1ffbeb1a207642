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
    from aiotp.plans.executor import Executor
    from aiotp.plans.locks import LockStatistics, ResourceLocks
    from aiotp.plans.plan import Plan
    from aiotp.plans.planner import Planner, create_and_validate_plan_sync
    from aiotp.plans.results import StepResult, StepStatus, TraceEntry
    from aiotp.plans.run import PlanHandle, cancel_plan, plan_progress, run_plan, start_plan
    from aiotp.plans.spec import LatencyClass, ToolSpec, pool_tool, tool_spec
    from aiotp.plans.step import PlanStep
    from aiotp.plans.trace import format_timeline, to_chrome_trace

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
    "Executor": "aiotp.plans.executor",
    "LockStatistics": "aiotp.plans.locks",
    "ResourceLocks": "aiotp.plans.locks",
    "StepResult": "aiotp.plans.results",
    "StepStatus": "aiotp.plans.results",
    "TraceEntry": "aiotp.plans.results",
    "PlanHandle": "aiotp.plans.run",
    "cancel_plan": "aiotp.plans.run",
    "plan_progress": "aiotp.plans.run",
    "run_plan": "aiotp.plans.run",
    "start_plan": "aiotp.plans.run",
    "format_timeline": "aiotp.plans.trace",
    "to_chrome_trace": "aiotp.plans.trace",
}

__all__ = [
    "DuplicateProducer",
    "DuplicateStep",
    "Executor",
    "LatencyClass",
    "LockStatistics",
    "Plan",
    "PlanCancelled",
    "PlanCycle",
    "PlanError",
    "PlanHandle",
    "PlanStep",
    "PlanValidationError",
    "Planner",
    "ResourceLocks",
    "StepFailed",
    "StepResult",
    "StepStatus",
    "ToolSpec",
    "TraceEntry",
    "UnknownArtifact",
    "UnknownStep",
    "cancel_plan",
    "create_and_validate_plan_sync",
    "format_timeline",
    "plan_progress",
    "pool_tool",
    "run_plan",
    "start_plan",
    "to_chrome_trace",
    "tool_spec",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiotp.plans' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
