"""aiotp: Erlang/OTP-style actors, supervision trees, worker pools and sessions for asyncio.

The public API is re-exported here and loaded on first use (PEP 562), so that ``import aiotp``
stays cheap: a worker process that only needs `aiotp.Adapter` and `aiotp.tool` does not pay
for the actor runtime, and starts in a few milliseconds.
"""

from __future__ import annotations

# Neither typing nor importlib at run time: a worker process imports this package before it
# can serve, and typing is ~5 ms of its start. (Type checkers read TYPE_CHECKING as True.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from aiotp.ops import metrics
    from aiotp.ops.application import Application, ApplicationStartError, AppState
    from aiotp.ops.control import ControlServer, serve_control
    from aiotp.ops.control_protocol import ControlError, ControlUnavailable, SocketInUse
    from aiotp.ops.snapshot import Snapshot
    from aiotp.runtime import (
        NOREPLY,
        Actor,
        ActorExited,
        ActorRef,
        AiotpError,
        Caller,
        CallTimeout,
        Down,
        Exit,
        MailboxFull,
        MonitorRef,
        NameTaken,
        NoProc,
        Runtime,
        RuntimeClosed,
        Timer,
        UnhandledMessage,
        current_actor,
        is_normal_exit,
        run,
        telemetry,
    )
    from aiotp.runtime.clock import Clock, ClockError, RealClock, VirtualClock
    from aiotp.session_store import (
        IllegalTransition,
        Session,
        SessionEvent,
        SessionExists,
        SessionNotFound,
        SessionQuotaExceeded,
        SessionStore,
        SessionStoreError,
        SessionStoreUnavailable,
        SnapshotError,
        StoreStats,
        SubscriberLagged,
        Table,
        TableInfo,
    )
    from aiotp.session_store.redis_store import RedisSessionStore
    from aiotp.supervisors import (
        ChildInfo,
        ChildRunning,
        ChildSpec,
        ChildStatus,
        DuplicateChild,
        DynamicSupervisor,
        MaxChildren,
        StartChildError,
        Supervisor,
        SupervisorRef,
        UnknownChild,
    )
    from aiotp.workers import (
        Adapter,
        CheckoutTimeout,
        Heartbeat,
        HeartbeatTimeout,
        Percentiles,
        PoolBusy,
        PoolStats,
        ProtocolError,
        Retry,
        SerializationError,
        SessionWorkerLost,
        ToolError,
        UnknownPool,
        UnknownTool,
        UnsupportedPlatform,
        WorkerBusy,
        WorkerCrashed,
        WorkerSession,
        WorkerStartError,
        WorkerStats,
        pool_spec,
        tool,
    )

_EXPORTS: dict[str, str] = {
    "RedisSessionStore": "aiotp.session_store.redis_store",
    "SessionStoreError": "aiotp.session_store",
    "SessionStoreUnavailable": "aiotp.session_store",
    "Clock": "aiotp.runtime.clock",
    "ClockError": "aiotp.runtime.clock",
    "RealClock": "aiotp.runtime.clock",
    "VirtualClock": "aiotp.runtime.clock",
    "ControlServer": "aiotp.ops.control",
    "serve_control": "aiotp.ops.control",
    "ControlError": "aiotp.ops.control_protocol",
    "ControlUnavailable": "aiotp.ops.control_protocol",
    "SocketInUse": "aiotp.ops.control_protocol",
    "Snapshot": "aiotp.ops.snapshot",
    "ChildStatus": "aiotp.supervisors",
    "AppState": "aiotp.ops.application",
    "Application": "aiotp.ops.application",
    "ApplicationStartError": "aiotp.ops.application",
    "IllegalTransition": "aiotp.session_store",
    "Session": "aiotp.session_store",
    "SessionEvent": "aiotp.session_store",
    "SessionExists": "aiotp.session_store",
    "SessionNotFound": "aiotp.session_store",
    "SessionQuotaExceeded": "aiotp.session_store",
    "SessionStore": "aiotp.session_store",
    "SnapshotError": "aiotp.session_store",
    "StoreStats": "aiotp.session_store",
    "SubscriberLagged": "aiotp.session_store",
    "Table": "aiotp.session_store",
    "TableInfo": "aiotp.session_store",
    "NOREPLY": "aiotp.runtime",
    "Actor": "aiotp.runtime",
    "ActorExited": "aiotp.runtime",
    "ActorRef": "aiotp.runtime",
    "AiotpError": "aiotp.runtime",
    "Caller": "aiotp.runtime",
    "CallTimeout": "aiotp.runtime",
    "Down": "aiotp.runtime",
    "Exit": "aiotp.runtime",
    "MailboxFull": "aiotp.runtime",
    "MonitorRef": "aiotp.runtime",
    "NameTaken": "aiotp.runtime",
    "NoProc": "aiotp.runtime",
    "Runtime": "aiotp.runtime",
    "RuntimeClosed": "aiotp.runtime",
    "Timer": "aiotp.runtime",
    "UnhandledMessage": "aiotp.runtime",
    "current_actor": "aiotp.runtime",
    "is_normal_exit": "aiotp.runtime",
    "run": "aiotp.runtime",
    "telemetry": "aiotp.runtime",
    "ChildInfo": "aiotp.supervisors",
    "ChildRunning": "aiotp.supervisors",
    "ChildSpec": "aiotp.supervisors",
    "DuplicateChild": "aiotp.supervisors",
    "DynamicSupervisor": "aiotp.supervisors",
    "MaxChildren": "aiotp.supervisors",
    "StartChildError": "aiotp.supervisors",
    "Supervisor": "aiotp.supervisors",
    "SupervisorRef": "aiotp.supervisors",
    "UnknownChild": "aiotp.supervisors",
    "Adapter": "aiotp.workers",
    "CheckoutTimeout": "aiotp.workers",
    "Heartbeat": "aiotp.workers",
    "HeartbeatTimeout": "aiotp.workers",
    "Percentiles": "aiotp.workers",
    "PoolBusy": "aiotp.workers",
    "PoolStats": "aiotp.workers",
    "Retry": "aiotp.workers",
    "SessionWorkerLost": "aiotp.workers",
    "WorkerBusy": "aiotp.workers",
    "WorkerSession": "aiotp.workers",
    "ProtocolError": "aiotp.workers",
    "SerializationError": "aiotp.workers",
    "ToolError": "aiotp.workers",
    "UnknownPool": "aiotp.workers",
    "UnknownTool": "aiotp.workers",
    "WorkerCrashed": "aiotp.workers",
    "WorkerStartError": "aiotp.workers",
    "UnsupportedPlatform": "aiotp.workers",
    "WorkerStats": "aiotp.workers",
    "pool_spec": "aiotp.workers",
    "tool": "aiotp.workers",
}

__all__ = [
    "NOREPLY",
    "Actor",
    "ActorExited",
    "ActorRef",
    "Adapter",
    "AiotpError",
    "AppState",
    "Application",
    "ApplicationStartError",
    "CallTimeout",
    "Caller",
    "CheckoutTimeout",
    "ChildInfo",
    "ChildRunning",
    "ChildSpec",
    "ChildStatus",
    "Clock",
    "ClockError",
    "ControlError",
    "ControlServer",
    "ControlUnavailable",
    "Down",
    "DuplicateChild",
    "DynamicSupervisor",
    "Exit",
    "Heartbeat",
    "HeartbeatTimeout",
    "IllegalTransition",
    "MailboxFull",
    "MaxChildren",
    "MonitorRef",
    "NameTaken",
    "NoProc",
    "Percentiles",
    "PoolBusy",
    "PoolStats",
    "ProtocolError",
    "RealClock",
    "RedisSessionStore",
    "Retry",
    "Runtime",
    "RuntimeClosed",
    "SerializationError",
    "Session",
    "SessionEvent",
    "SessionExists",
    "SessionNotFound",
    "SessionQuotaExceeded",
    "SessionStore",
    "SessionStoreError",
    "SessionStoreUnavailable",
    "SessionWorkerLost",
    "Snapshot",
    "SnapshotError",
    "SocketInUse",
    "StartChildError",
    "StoreStats",
    "SubscriberLagged",
    "Supervisor",
    "SupervisorRef",
    "Table",
    "TableInfo",
    "Timer",
    "ToolError",
    "UnhandledMessage",
    "UnknownChild",
    "UnknownPool",
    "UnknownTool",
    "UnsupportedPlatform",
    "VirtualClock",
    "WorkerBusy",
    "WorkerCrashed",
    "WorkerSession",
    "WorkerStartError",
    "WorkerStats",
    "current_actor",
    "is_normal_exit",
    "metrics",
    "pool_spec",
    "run",
    "serve_control",
    "telemetry",
    "tool",
]

__version__ = "0.1.0"


# Submodules offered as attributes of the package (``aiotp.metrics.serve_metrics(rt)``).
_MODULES: dict[str, str] = {"metrics": "aiotp.metrics"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiotp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
