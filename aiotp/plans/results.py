"""What a plan run records: each step's status and result, and one trace entry per attempt."""

from __future__ import annotations

import enum
from typing import Any

import attrs

__all__ = ["StepResult", "StepStatus", "TraceEntry"]


class StepStatus(enum.Enum):
    PENDING = "pending"  # waiting for the steps it depends on
    WAITING = "waiting"  # ready; waiting for its tool's concurrency cap or its resources
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # failed for good (after its retries)
    SKIPPED = "skipped"  # never started: a step it depends on failed
    CANCELLED = "cancelled"  # the run stopped while the step waited or ran


@attrs.define
class StepResult:
    """A step's outcome (`Executor.get_results`): ``result`` when DONE, ``error`` when FAILED."""

    step_id: str
    status: StepStatus = StepStatus.PENDING
    result: Any = None
    error: BaseException | None = None
    attempts: int = 0
    start: float | None = None  # seconds since the run started, of its first attempt
    duration: float = 0.0  # seconds, all attempts, from its first start to its end


@attrs.frozen
class TraceEntry:
    """One attempt of one step. Times in seconds since the run started.

    ``status``: "ok", "error", "timeout" or "cancelled"; ``lock_wait``: time spent waiting
    for its tool's cap and its resources; ``pool_wait``: for a pool tool, time until a worker
    took it (the rest of ``duration`` is the worker's).
    """

    step_id: str
    tool: str
    status: str
    attempt: int
    start: float
    duration: float
    lock_wait: float = 0.0
    pool_wait: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)
