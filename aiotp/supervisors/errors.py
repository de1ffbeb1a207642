"""Supervisor errors: each says which child and what the supervisor did (or did not) do."""

from __future__ import annotations

from typing import Any

from aiotp.errors import AiotpError

__all__ = [
    "ChildRunning",
    "DuplicateChild",
    "MaxChildren",
    "StartChildError",
    "UnknownChild",
]


class DuplicateChild(AiotpError):
    """A child with this id already exists in the supervisor (running or not); nothing started."""


class UnknownChild(AiotpError):
    """No child with this id exists in the supervisor."""


class ChildRunning(AiotpError):
    """The operation needs the child stopped (restart_child, delete_child) and it is running."""


class MaxChildren(AiotpError):
    """A DynamicSupervisor already runs `max_children` children; nothing was started."""


class StartChildError(AiotpError):
    """A child failed to start; `.child_id` names it and `.cause` is what its start raised."""

    def __init__(self, child_id: Any, cause: BaseException) -> None:
        super().__init__(f"child {child_id!r} failed to start: {cause!r}")
        self.child_id = child_id
        self.cause = cause
