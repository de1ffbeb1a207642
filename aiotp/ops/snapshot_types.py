"""The shape of a snapshot (`aiotp.ops.snapshot`), as TypedDicts: what crosses the control socket.

Kept apart from the code that builds it so that a client (``aiotp top``, a test, a dashboard)
can name the types without loading the runtime. Everything is plain JSON: dicts, lists, str,
int, float, bool and None. New fields may appear in any version; `SNAPSHOT_VERSION` is bumped
when one changes meaning or disappears.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

__all__ = [
    "DOWN",
    "SNAPSHOT_VERSION",
    "ActorNode",
    "MoreInfo",
    "PercentileInfo",
    "PoolInfo",
    "SessionsInfo",
    "Snapshot",
    "WorkerInfo",
]

#: Bumped when a field changes meaning or disappears (new fields do not bump it).
SNAPSHOT_VERSION = 1

#: A supervised child that is not running: stopped, or between a death and its restart.
DOWN = "DOWN"


class MoreInfo(TypedDict):
    """Children left out of a snapshot taken with ``max_children``: how many, their restarts
    (as children of this supervisor), how many are DOWN. Their own children are not counted."""

    count: int
    restarts: int
    down: int


# "class" is a keyword: the functional form lets the key be the word an operator expects.
ActorNode = TypedDict(
    "ActorNode",
    {
        "id": int | None,  # the actor's id in its runtime (None for a DOWN child)
        "class": str,
        "name": str | None,  # registered name
        "child_id": str | None,  # its id in its supervisor, when supervised
        "state": str,  # STARTING, RUNNING, STOPPING, DEAD, or DOWN
        "supervisor": bool,
        "mailbox": int,
        "restarts": int | None,  # restarts by its supervisor; None when unsupervised
        "uptime": float | None,  # seconds since spawned; None for a DOWN child
        "children": list["ActorNode"],
        "more": NotRequired[MoreInfo],  # only when max_children left some out
    },
)


class PercentileInfo(TypedDict):
    count: int
    p50: float | None
    p99: float | None


class WorkerInfo(TypedDict):
    worker_id: str
    index: int
    pid: int | None
    node: str | None
    state: str  # serving, worn, draining, gone (the slot's lifecycle)
    busy: int
    capacity: int
    requests: int
    errors: int
    pinned_sessions: int
    restarts: int  # restarts of this worker's index in the pool
    uptime: float


class PoolInfo(TypedDict):
    name: str
    profile: str
    size: int
    live: int
    busy: int
    queued: int
    capacity: int
    requests: int
    errors: int
    cancelled: int
    restarts: int
    recycled: int
    retries: int
    queue_timeouts: int
    saturated: int
    pinned_sessions: int
    affinity: str
    latency: PercentileInfo
    queue_wait: PercentileInfo
    workers: list[WorkerInfo]


class SessionsInfo(TypedDict, total=False):
    current: int
    max: int
    created: int
    deleted: int
    expired: int
    gc: int
    by_state: dict[str, int]
    error: str  # only when the store could not be read


class Snapshot(TypedDict):
    version: int
    name: str  # rt.name
    state: str  # the runtime's: NEW, RUNNING, STOPPING, STOPPED
    pid: int
    host: str
    time: float  # wall clock (Unix time) when taken
    uptime: float | None  # seconds since the runtime started; None before
    actors: int  # live actors
    tree: list[ActorNode]
    pools: list[PoolInfo]
    sessions: SessionsInfo | None  # None when the runtime has no session store
    tree_more: NotRequired[MoreInfo]  # roots left out by max_children
