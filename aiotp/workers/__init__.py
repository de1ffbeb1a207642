"""Named pools of thread and process workers running adapters, with heartbeat monitors.

Exports load on first use, so a worker process importing `aiotp.workers.host` stays light.
"""

from __future__ import annotations

# Neither typing nor importlib at run time: a worker process imports this package before it
# can serve, and typing is ~5 ms of its start. (Type checkers read TYPE_CHECKING as True.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from aiotp.workers.adapter import Adapter, adapter_path, load_adapter, tool, tools_of
    from aiotp.workers.config import Heartbeat, PoolConfig
    from aiotp.workers.errors import (
        CheckoutTimeout,
        PoolBusy,
        ProtocolError,
        SerializationError,
        SessionWorkerLost,
        ToolError,
        UnknownPool,
        UnknownTool,
        UnsupportedPlatform,
        WorkerBusy,
        WorkerCrashed,
        WorkerStartError,
    )
    from aiotp.workers.heartbeat import HeartbeatTimeout
    from aiotp.workers.pool_stats import Percentiles, PoolStats, WorkerStats
    from aiotp.workers.pool_tree import pool_spec
    from aiotp.workers.retry import Retry
    from aiotp.workers.session_state import WorkerSession

_EXPORTS: dict[str, str] = {
    "Adapter": "aiotp.workers.adapter",
    "adapter_path": "aiotp.workers.adapter",
    "load_adapter": "aiotp.workers.adapter",
    "tool": "aiotp.workers.adapter",
    "tools_of": "aiotp.workers.adapter",
    "Heartbeat": "aiotp.workers.config",
    "PoolConfig": "aiotp.workers.config",
    "Percentiles": "aiotp.workers.pool_stats",
    "PoolStats": "aiotp.workers.pool_stats",
    "WorkerStats": "aiotp.workers.pool_stats",
    "Retry": "aiotp.workers.retry",
    "WorkerSession": "aiotp.workers.session_state",
    "SessionWorkerLost": "aiotp.workers.errors",
    "WorkerBusy": "aiotp.workers.errors",
    "CheckoutTimeout": "aiotp.workers.errors",
    "PoolBusy": "aiotp.workers.errors",
    "ProtocolError": "aiotp.workers.errors",
    "SerializationError": "aiotp.workers.errors",
    "ToolError": "aiotp.workers.errors",
    "UnknownPool": "aiotp.workers.errors",
    "UnknownTool": "aiotp.workers.errors",
    "WorkerCrashed": "aiotp.workers.errors",
    "WorkerStartError": "aiotp.workers.errors",
    "UnsupportedPlatform": "aiotp.workers.errors",
    "HeartbeatTimeout": "aiotp.workers.heartbeat",
    "pool_spec": "aiotp.workers.pool_tree",
}

__all__ = [
    "Adapter",
    "CheckoutTimeout",
    "Heartbeat",
    "HeartbeatTimeout",
    "Percentiles",
    "PoolBusy",
    "PoolConfig",
    "PoolStats",
    "ProtocolError",
    "Retry",
    "SerializationError",
    "SessionWorkerLost",
    "ToolError",
    "UnknownPool",
    "UnknownTool",
    "UnsupportedPlatform",
    "WorkerBusy",
    "WorkerCrashed",
    "WorkerSession",
    "WorkerStartError",
    "WorkerStats",
    "adapter_path",
    "load_adapter",
    "pool_spec",
    "tool",
    "tools_of",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiotp.workers' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
