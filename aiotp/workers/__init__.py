"""Named pools of thread and process workers running adapters, with heartbeat monitors."""

from aiotp.workers.adapter import Adapter, adapter_path, load_adapter, tool, tools_of
from aiotp.workers.config import Heartbeat, PoolConfig
from aiotp.workers.dispatcher import PoolStats, WorkerStats
from aiotp.workers.errors import (
    CheckoutTimeout,
    PoolBusy,
    ProtocolError,
    SerializationError,
    ToolError,
    UnknownPool,
    UnknownTool,
    WorkerCrashed,
    WorkerStartError,
)
from aiotp.workers.heartbeat import HeartbeatTimeout
from aiotp.workers.pool import pool_spec

__all__ = [
    "Adapter",
    "CheckoutTimeout",
    "Heartbeat",
    "HeartbeatTimeout",
    "PoolBusy",
    "PoolConfig",
    "PoolStats",
    "ProtocolError",
    "SerializationError",
    "ToolError",
    "UnknownPool",
    "UnknownTool",
    "WorkerCrashed",
    "WorkerStartError",
    "WorkerStats",
    "adapter_path",
    "load_adapter",
    "pool_spec",
    "tool",
    "tools_of",
]
