"""`snapshot(rt)` (also ``rt.snapshot()``): a JSON-ready picture of a running system.

An operator asking "what is this process doing?" needs the supervision tree, the pools and the
sessions at one instant, in a form that crosses a socket. This builds it from plain reads of the
runtime's state, with no message to any actor and no await, so it is one consistent picture of
one moment of the loop: no actor can crash, restart or stop half-way through it. It is not a
monitoring history (see the metrics exporter for rates) and it reads, never changes, anything.

::

    snap = rt.snapshot()
    json.dumps(snap)            # always works: only dicts, lists, str, int, float, bool, None
    snap["tree"][0]["children"] # the first root's children, nested
    snap["pools"][0]["workers"] # per worker: pid, node, state, busy, requests, errors, ...

Guarantees:
- Safe at any moment on the runtime's loop thread: while actors start, crash and restart, while
  pools replace workers, before the runtime started and during and after its shutdown. (Not
  from another thread: the actor state it reads belongs to the loop.)
- The tree: every live actor appears exactly once, down to `MAX_DEPTH` levels (a chain of
  ``link=True`` spawns can be deeper than Python's recursion limit, and than what a JSON
  decoder will read back): a node at the last level lists no children, it counts them in its
  ``"more"``. A supervisor's children come in start order,
  including children it holds but that do not run (state ``"DOWN"``: stopped, or between a death
  and its restart); then the actors it spawned with ``link=True`` that it does not supervise.
  An actor nobody owns is a root, in start order.
- Numbers are finite (``json.dumps(..., allow_nan=False)`` works): a latency percentile is None
  when nothing was recorded or when it lies past the histogram's last bound (100 s).
- Names and child ids that are not strings (``("aiotp.pool", "ml")``) are given as their repr.
- ``node`` of a worker: the node its handle reports (``node_id``: a Ray worker's node id),
  else this host's name for workers that run here (thread and process profiles), else None.
- A section that fails to read (a session store backend that is down) carries ``"error"``
  instead of failing the whole snapshot. A store that answers only by coroutine (the Redis
  store) cannot be read by this synchronous function: `snapshot_async` (what the control
  socket uses) awaits it, within a bound.

Cost: O(actors + workers) plus, when the runtime has a session store, its `count_by_state`
scan (about 1 ms per 10,000 sessions).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from aiotp.ops.snapshot_types import (
    DOWN,
    SNAPSHOT_VERSION,
    ActorNode,
    MoreInfo,
    PercentileInfo,
    PoolInfo,
    SessionsInfo,
    Snapshot,
    WorkerInfo,
)
from aiotp.runtime.ref import Phase
from aiotp.supervisors.refs import SupervisorRef

if TYPE_CHECKING:
    from aiotp.runtime.ref import ActorRef
    from aiotp.runtime.runtime import Runtime
    from aiotp.supervisors.core import ChildStatus

__all__ = [
    "MAX_DEPTH",
    "ActorNode",
    "MoreInfo",
    "PercentileInfo",
    "PoolInfo",
    "SessionsInfo",
    "Snapshot",
    "WorkerInfo",
    "snapshot",
    "snapshot_async",
]


def snapshot(rt: Runtime, *, max_children: int | None = None) -> Snapshot:
    """The picture of `rt` now (see the module docstring).

    ``max_children`` bounds the children listed per node (and the roots): the rest are not
    walked, only counted in the node's ``"more"`` (the roots': the snapshot's ``"tree_more"``).
    What a live view asks for: it cannot show 10,000 children anyway, and building and sending
    them costs the application several ms per thousand actors. A session store that answers
    only by coroutine (Redis) shows as ``{"error": NEEDS_AWAIT}``: use `snapshot_async`.
    """
    if max_children is not None and (
        not isinstance(max_children, int) or isinstance(max_children, bool) or max_children < 1
    ):
        raise ValueError(f"max_children must be a positive int or None, got {max_children!r}")
    loop = rt._loop
    now = loop.time() if loop is not None else None
    started = rt._started_at
    actors = rt.actors()
    tree = _Tree(actors, now, max_children)
    roots, more = tree.expand([(ref, None) for ref in tree.top], 0)
    snap = Snapshot(
        version=SNAPSHOT_VERSION,
        name=rt.name,
        state=rt._state.name,
        pid=os.getpid(),
        host=_HOST,
        time=time.time(),
        uptime=_round(now - started) if now is not None and started is not None else None,
        actors=len(actors),
        tree=roots,
        pools=_pools(rt),
        sessions=_sessions(rt),
    )
    if more is not None:
        snap["tree_more"] = more
    return snap


async def snapshot_async(
    rt: Runtime, *, max_children: int | None = None, sessions_timeout: float = 1.0
) -> Snapshot:
    """`snapshot`, with the counts of a session store that must be awaited (Redis), read
    within `sessions_timeout` seconds (else the section carries an error): the control
    socket's way. The tree and the pools are still one moment; the sessions are read just
    after it."""
    snap = snapshot(rt, max_children=max_children)
    store = _store(rt)
    if store is not None and _is_async(store):
        snap["sessions"] = await _sessions_async(store, sessions_timeout)
    return snap


# -- the tree --------------------------------------------------------------------------------
#: Levels of the tree listed. The walk recurses about 3 frames a level, and a JSON decoder
#: (the control client's) about 2 a level: both stay far below Python's limit of 1000.
MAX_DEPTH = 100
_PHASE_NAMES = {phase: phase.name for phase in Phase}  # Enum.name is a slow property
_Entry = tuple["ActorRef | None", "ChildStatus | None"]  # a live actor, or a DOWN child


class _Tree:
    """Who owns whom, read once: supervisors' children first, then link=True spawns."""

    def __init__(self, actors: list[ActorRef], now: float | None, cap: int | None) -> None:
        self.now = now
        self.cap = cap
        self.live = dict.fromkeys(actors)
        self.status: dict[ActorRef, list[ChildStatus]] = {}
        supervised: set[ActorRef] = set()
        for ref in actors:
            if isinstance(ref, SupervisorRef):
                children = ref.children_status()
                self.status[ref] = children
                supervised.update(c.ref for c in children if c.ref is not None)
        self.linked: dict[ActorRef, list[ActorRef]] = {}
        self.top: list[ActorRef] = []
        for ref in actors:
            if ref in supervised:
                continue
            parent = ref.parent
            if parent is not None and parent in self.live:
                self.linked.setdefault(parent, []).append(ref)
            else:
                self.top.append(ref)
        self.seen: set[ActorRef] = set()

    def expand(self, entries: list[_Entry], depth: int) -> tuple[list[ActorNode], MoreInfo | None]:
        """Nodes (at `depth`) for the first `cap` entries; the rest only counted, and all of
        them past `MAX_DEPTH`."""
        shown = entries if self.cap is None else entries[: self.cap]
        if depth >= MAX_DEPTH:
            shown = []
        nodes = [
            self.node(ref, status, depth) if ref is not None else _down(status)
            for ref, status in shown
            if ref is not None or status is not None
        ]
        if len(shown) == len(entries):
            return nodes, None
        rest = entries[len(shown) :]
        return nodes, MoreInfo(
            count=len(rest),
            restarts=sum(status.restarts for _, status in rest if status is not None),
            down=sum(1 for ref, _ in rest if ref is None),
        )

    def node(self, ref: ActorRef, child: ChildStatus | None, depth: int) -> ActorNode:
        self.seen.add(ref)
        live, seen = self.live, self.seen
        entries: list[_Entry] = []
        for status in self.status.get(ref, ()):
            sub = status.ref
            if sub is None or sub not in live:
                entries.append((None, status))
            elif sub not in seen:  # a ref listed twice would be a bug; never loop on it
                entries.append((sub, status))
        entries.extend((r, None) for r in self.linked.get(ref, ()) if r not in seen)
        children, more = self.expand(entries, depth + 1)
        kind = ref.actor_class
        node: ActorNode = {
            "id": ref.id,
            "class": kind.__name__ if kind is not None else "?",
            "name": _label(ref.name),
            "child_id": _label(child.id) if child is not None else None,
            "state": _PHASE_NAMES[ref.phase],
            "supervisor": ref in self.status,
            "mailbox": ref.mailbox_size(),
            "restarts": child.restarts if child is not None else None,
            "uptime": _round(self.now - ref.started_at) if self.now is not None else None,
            "children": children,
        }
        if more is not None:
            node["more"] = more
        return node


def _down(status: ChildStatus | None) -> ActorNode:
    assert status is not None
    start = status.start
    return {
        "id": None,
        "class": getattr(start, "__qualname__", None) or type(start).__name__,
        "name": None,
        "child_id": _label(status.id),
        "state": DOWN,
        "supervisor": status.type == "supervisor",
        "mailbox": 0,
        "restarts": status.restarts,
        "uptime": None,
        "children": [],
    }


# -- pools ----------------------------------------------------------------------------------
def _pools(rt: Runtime) -> list[PoolInfo]:
    # Read without creating: a snapshot must not add the pools' registry to a runtime that has
    # never started a pool (nor anything to one that is shutting down).
    registry = rt._extensions.get("aiotp.pools")
    if registry is None:
        return []
    return [_pool(pool) for pool in list(registry.pools.values())]


def _pool(pool: Any) -> PoolInfo:
    stats = pool.stats()
    slots = {slot.worker_id: slot for slot in pool.dispatcher.slots}
    local = pool.config.profile in ("thread", "process")
    mono = time.monotonic()
    workers: list[WorkerInfo] = []
    for w in stats.workers:
        slot = slots.get(w.worker_id)
        handle = slot.handle if slot is not None else None
        node = getattr(handle, "node_id", None)  # a Ray worker's node (ray_worker.py)
        workers.append(
            WorkerInfo(
                worker_id=w.worker_id,
                index=w.index,
                pid=w.pid,
                node=str(node) if node is not None else (_HOST if local else None),
                state=w.state,
                busy=w.busy,
                capacity=w.capacity,
                requests=w.requests,
                errors=w.errors,
                pinned_sessions=w.pinned_sessions,
                restarts=w.restarts,
                uptime=_round(mono - slot.started_at) if slot is not None else 0.0,
            )
        )
    return PoolInfo(
        name=stats.name,
        profile=stats.profile,
        size=stats.size,
        live=stats.live,
        busy=stats.busy,
        queued=stats.queued,
        capacity=stats.capacity,
        requests=stats.requests,
        errors=stats.errors,
        cancelled=stats.cancelled,
        restarts=stats.restarts,
        recycled=stats.recycled,
        retries=stats.retries,
        queue_timeouts=stats.queue_timeouts,
        saturated=stats.saturated,
        pinned_sessions=stats.pinned_sessions,
        affinity=stats.affinity,
        latency=_percentiles(stats.latency),
        queue_wait=_percentiles(stats.queue_wait),
        workers=workers,
    )


def _percentiles(p: Any) -> PercentileInfo:
    return PercentileInfo(count=p.count, p50=_finite(p.p50), p99=_finite(p.p99))


# -- sessions -------------------------------------------------------------------------------
#: What `snapshot` says of a store that answers only by coroutine (the Redis store).
NEEDS_AWAIT = "the session store answers asynchronously: use 'await snapshot_async(rt)'"


def _store(rt: Runtime) -> Any:
    ext = rt._extensions.get("aiotp.sessions")  # never created by looking (see _pools)
    return getattr(ext, "store", None)


def _is_async(store: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(store, "stats", None))


def _sessions(rt: Runtime) -> SessionsInfo | None:
    store = _store(rt)
    if store is None:
        return None
    if _is_async(store):
        return SessionsInfo(error=NEEDS_AWAIT)  # without calling it: no coroutine left over
    try:
        info = _stats_info(store.stats())
        count_by_state = getattr(store, "count_by_state", None)
        if count_by_state is not None:
            info["by_state"] = _by_state(count_by_state())
        return info
    except Exception as exc:  # a store backend that is down must not hide the rest
        # Not logged: a live view asks several times a second; the reply carries the error.
        return SessionsInfo(error=f"{type(exc).__name__}: {exc}")


async def _sessions_async(store: Any, timeout: float) -> SessionsInfo:
    try:
        async with asyncio.timeout(timeout):
            info = _stats_info(await store.stats())
            count_by_state = getattr(store, "count_by_state", None)
            if count_by_state is not None:
                counts = count_by_state()
                info["by_state"] = _by_state(
                    await counts if inspect.isawaitable(counts) else counts
                )
            return info
    except TimeoutError:
        return SessionsInfo(error=f"the session store did not answer within {timeout} s")
    except Exception as exc:
        return SessionsInfo(error=f"{type(exc).__name__}: {exc}")


def _stats_info(stats: Any) -> SessionsInfo:
    return SessionsInfo(
        current=int(stats.current_sessions),
        max=int(stats.max_sessions),
        created=int(stats.sessions_created),
        deleted=int(stats.sessions_deleted),
        expired=int(stats.sessions_expired),
        gc=int(stats.sessions_gc),
    )


def _by_state(counts: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in counts.items()}


# -- helpers --------------------------------------------------------------------------------
_HOST = socket.gethostname()


def _label(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return repr(value)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _round(seconds: float) -> float:
    return round(max(0.0, seconds), 3)
