"""Errors of pools and workers: whose fault it was, and what you may now assume.

| error | whose fault | what you may assume |
| --- | --- | --- |
| `ToolError` | the tool raised | it ran (partly); the worker is fine and keeps serving |
| `UnknownTool` | the caller | nothing ran; the message lists the tools that exist |
| `SerializationError` | the caller (or a tool's result) | nothing was sent / the result was lost |
| `WorkerCrashed` | the worker died holding your request | it may or may not have run |
| `SessionWorkerLost` | its pinned worker died or was retired | the session's state is gone |
| `PoolBusy` | load: the queue is full | nothing ran; try later |
| `WorkerBusy` | load: the session's worker is busy | nothing ran (strict_fail_fast) |
| `CheckoutTimeout` | load: no worker freed in time | nothing ran |
| `UnknownPool` | the caller | no pool by that name is running |
| `WorkerStartError` | the adapter or its environment | the worker never served |
| `ProtocolError` | a worker broke the wire protocol | that worker was killed and replaced |
| `UnsupportedPlatform` | the platform | the process profile needs Linux 5.3+; nothing started |
"""

from __future__ import annotations

from aiotp.errors import AiotpError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in a worker process
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CheckoutTimeout",
    "PoolBusy",
    "ProtocolError",
    "SerializationError",
    "SessionWorkerLost",
    "ToolError",
    "UnknownPool",
    "UnknownTool",
    "UnsupportedPlatform",
    "WorkerBusy",
    "WorkerCrashed",
    "WorkerStartError",
]


class WorkerCrashed(AiotpError):
    """The worker serving your request died (or was retired) before answering.

    ``delivered`` is False when the request provably never reached the worker (it was gone
    before a byte was sent): such a request is always dispatched again, and a caller never
    sees it as `WorkerCrashed`.
    """

    def __init__(
        self,
        message: str,
        worker_id: str | None = None,
        reason: Any = None,
        *,
        delivered: bool = True,
    ) -> None:
        super().__init__(message)
        self.worker_id = worker_id
        self.reason = reason
        self.delivered = delivered


class SessionWorkerLost(WorkerCrashed):
    """The worker a session is pinned to (strict affinity) died or was recycled: whatever
    state it held for the session is gone. The session is unpinned; its next call is placed
    on a live worker. Each session learns of a lost worker once."""

    def __init__(self, message: str, session_id: str, worker_id: str | None = None) -> None:
        super().__init__(message, worker_id, "session worker lost")
        self.session_id = session_id


class ToolError(AiotpError):
    """The tool raised; `type_name`, `message` and `traceback` describe the remote exception.

    ``str(error)`` is ``"Type: message"`` only: a web handler that returns it does not leak the
    worker's file paths and code. The remote traceback stays in ``traceback``, and is attached
    as a note (PEP 678), so a traceback printed to a log still shows it.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        if traceback:
            self.add_note(f"--- remote traceback ---\n{traceback.rstrip()}")

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


class UnknownTool(AiotpError):
    """The adapter has no tool by that name; `available` lists the ones it has."""

    def __init__(self, tool: str, available: list[str]) -> None:
        super().__init__(f"unknown tool {tool!r}; the adapter's tools are: {', '.join(available)}")
        self.tool = tool
        self.available = available


class SerializationError(AiotpError, TypeError):
    """A value cannot cross the wire (msgpack only: no pickle, ever)."""


class PoolBusy(AiotpError):
    """Every worker is busy and the pool's queue is full (or the pool is stopping)."""


class WorkerBusy(PoolBusy):
    """``affinity="strict_fail_fast"``: the session's worker is busy; nothing was queued."""

    def __init__(self, message: str, session_id: str, worker_id: str) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.worker_id = worker_id


class CheckoutTimeout(AiotpError, TimeoutError):
    """No worker became free within the pool's checkout_timeout (or the call's timeout)."""


class UnknownPool(AiotpError):
    """No pool by that name is running."""


class WorkerStartError(AiotpError):
    """A worker failed to start; the message names it and, for processes, shows stderr's tail."""

    def __init__(self, message: str, worker_id: str | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.worker_id = worker_id
        self.stderr = stderr


class UnsupportedPlatform(AiotpError):
    """The process profile runs on Linux only (it needs pidfds); use the thread profile."""


class ProtocolError(AiotpError):
    """A worker sent a malformed or oversized frame; it is killed and replaced."""
