"""Supervision trees: ChildSpec, Supervisor, DynamicSupervisor (OTP semantics)."""

from aiotp.supervisors.core import ChildInfo, ChildStatus
from aiotp.supervisors.dynamic import DynamicSupervisor
from aiotp.supervisors.errors import (
    ChildRunning,
    DuplicateChild,
    MaxChildren,
    StartChildError,
    UnknownChild,
)
from aiotp.supervisors.refs import SupervisorRef
from aiotp.supervisors.spec import ChildSpec
from aiotp.supervisors.supervisor import Supervisor

__all__ = [
    "ChildInfo",
    "ChildRunning",
    "ChildSpec",
    "ChildStatus",
    "DuplicateChild",
    "DynamicSupervisor",
    "MaxChildren",
    "StartChildError",
    "Supervisor",
    "SupervisorRef",
    "UnknownChild",
]
