"""Errors of plans: what was wrong with a plan, and what a failed run leaves you.

| error | whose fault | what you may assume |
| --- | --- | --- |
| `PlanValidationError` (and its kinds below) | the plan | nothing ran |
| `DuplicateStep` | two steps share an id | nothing ran |
| `UnknownStep` | `depends_on` names no step | nothing ran |
| `UnknownArtifact` | a step consumes (or references) an artifact nobody produces | nothing ran |
| `DuplicateProducer` | two steps produce one artifact | nothing ran |
| `PlanCycle` | the dependencies form a cycle; ``cycle`` lists it | nothing ran |
| `StepFailed` | a step failed for good (after its retries) | ``artifacts``: what was produced |
| `PlanCancelled` | someone cancelled the run | ``artifacts`` holds what was produced |
"""

from __future__ import annotations

from typing import Any

from aiotp.errors import AiotpError

__all__ = [
    "DuplicateProducer",
    "DuplicateStep",
    "PlanCancelled",
    "PlanCycle",
    "PlanError",
    "PlanValidationError",
    "StepFailed",
    "UnknownArtifact",
    "UnknownStep",
]


class PlanError(AiotpError):
    """Base of every plan error."""


class PlanValidationError(PlanError, ValueError):
    """The plan is invalid; nothing ran."""


class DuplicateStep(PlanValidationError):
    """Two steps share one ``step_id``."""


class UnknownStep(PlanValidationError):
    """A step's ``depends_on`` names a step that is not in the plan."""


class UnknownArtifact(PlanValidationError):
    """A step consumes or references an artifact that no step produces and that is not among
    the plan's initial artifacts."""


class DuplicateProducer(PlanValidationError):
    """Two steps produce the same artifact (which one a consumer gets would depend on timing)."""


class PlanCycle(PlanValidationError):
    """The steps' dependencies form a cycle; ``cycle`` is it, first step repeated at the end."""

    def __init__(self, message: str, cycle: list[str]) -> None:
        super().__init__(message)
        self.cycle = cycle


class StepFailed(PlanError):
    """A step failed for good (after the retries its tool allows): ``step_id``, its ``error``
    (``__cause__`` too), and the ``artifacts`` the plan had produced when it stopped."""

    def __init__(
        self, message: str, step_id: str, error: BaseException, artifacts: dict[str, Any]
    ) -> None:
        super().__init__(message)
        self.step_id = step_id
        self.error = error
        self.artifacts = artifacts


class PlanCancelled(PlanError):
    """The run was cancelled (by name or by its caller); ``artifacts`` holds what it produced."""

    def __init__(self, message: str, artifacts: dict[str, Any]) -> None:
        super().__init__(message)
        self.artifacts = artifacts
