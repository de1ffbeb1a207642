"""`WorkerSlot`: one live worker as the dispatcher sees it (load, pins, lifecycle state).

A slot's lifecycle is one `SlotState`::

    JOINING --add--> SERVING --max_requests--> WORN --replaced--> DRAINING
                        `-----------------replaced/retired-------^
    any but DRAINING --removed (died, stopped)--> GONE

Only a SERVING slot whose worker is alive takes new work. A DRAINING slot keeps that state when
it is removed: its actor must know the worker was on its way out when it ended. Two facts are
not lifecycle states and stay flags: ``recycling`` (the pool manager has a replacement job for
it) and ``overrun`` (it must be killed rather than stopped gracefully).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
from typing import Any

__all__ = ["SlotState", "WorkerSlot"]


class SlotState(enum.Enum):
    JOINING = "joining"  # created, not yet in the dispatcher
    SERVING = "serving"  # takes new work
    WORN = "worn"  # started max_requests requests: takes no new work, awaits its replacement
    DRAINING = "draining"  # replaced or retired: finishes what it holds, then stops
    GONE = "gone"  # out of the dispatcher: its worker died or stopped


class WorkerSlot:
    """One live worker as the dispatcher sees it."""

    __slots__ = (
        "capacity",
        "errors",
        "handle",
        "in_flight",
        "index",
        "key",
        "level",
        "orphans",
        "overrun",
        "recycle_cause",
        "recycling",
        "ref",
        "requests",
        "sessions",
        "settings_sent",
        "started",
        "started_at",
        "state",
        "waiters",
        "worker_id",
    )

    def __init__(self, handle: Any, index: int, ref: Any = None, pipeline: int = 1) -> None:
        self.handle = handle
        self.worker_id: str = handle.worker_id
        self.index = index
        self.ref = ref
        # Requests it may hold: what it runs at once, times the pipeline depth (process only).
        depth = pipeline if getattr(handle, "pid", None) is not None else 1
        self.capacity: int = max(1, int(handle.capacity)) * depth
        self.in_flight = 0
        self.started = 0  # requests handed to it (max_requests bounds this)
        self.requests = 0  # requests finished
        self.errors = 0
        self.state = SlotState.JOINING
        self.recycling = False  # a replacement is being started; still serving meanwhile
        self.recycle_cause = ""  # why (see Pool.recycle), for the "recycled" event
        # Requests whose caller left while the worker still runs them (counted in in_flight).
        self.orphans = 0
        self.overrun = False  # a tool overran its caller past cancel_grace: retire by kill
        self.started_at = time.monotonic()
        self.sessions: set[str] = set()  # sessions pinned to it
        self.settings_sent: dict[str, Any] = {}  # session -> settings the worker holds
        self.waiters: collections.deque[tuple[asyncio.Future[WorkerSlot], str]] = (
            collections.deque()
        )
        self.level = -1  # its bucket in Dispatcher._free, -1 when in none
        self.key: tuple[int, int] | None = None  # its bucket in Dispatcher._place

    @property
    def draining(self) -> bool:
        return self.state is SlotState.DRAINING

    def __repr__(self) -> str:
        state = self.state.value
        return f"<WorkerSlot {self.worker_id} {state} {self.in_flight}/{self.capacity}>"
