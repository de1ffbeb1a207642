"""`WorkerSlot`: one live worker as the dispatcher sees it (load, pins, lifecycle marks)."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

__all__ = ["WorkerSlot"]


class WorkerSlot:
    """One live worker as the dispatcher sees it."""

    __slots__ = (
        "capacity",
        "draining",
        "errors",
        "exhausted",
        "handle",
        "in_flight",
        "index",
        "key",
        "level",
        "member",
        "orphans",
        "overrun",
        "recycling",
        "ref",
        "requests",
        "sessions",
        "settings_sent",
        "started",
        "started_at",
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
        self.member = False  # in the dispatcher (between add and remove)
        self.draining = False  # takes no new work; stops when idle
        self.exhausted = False  # started max_requests requests: takes no new work
        self.recycling = False  # a replacement is being started; still serving meanwhile
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

    def __repr__(self) -> str:
        state = "draining" if self.draining else "live"
        return f"<WorkerSlot {self.worker_id} {state} {self.in_flight}/{self.capacity}>"
