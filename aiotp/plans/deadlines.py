"""Per-attempt timeouts of plan steps, shared timers instead of one per attempt.

A plan of thousands of short steps would otherwise schedule (and cancel) one loop timer per
attempt, which is most of what the executor costs per step. Here attempts whose deadlines fall
in the same 10 ms share one timer: arming is a dict insert, disarming a dict pop, and a timer
that fires cancels the attempts of its bucket still running. A deadline is never early (it is
rounded up to the next 10 ms), at most 10 ms late.

The cancellation is told apart from any other the way `asyncio.timeout` does it: the attempt's
token is marked expired, and the step sees a `CancelledError` it may turn into `TimeoutError`
only if the task had not been cancelled for another reason as well (`Task.uncancel`).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Deadlines"]

TICK = 100  # buckets per second


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, dict[asyncio.Task[Any], object]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._expired: set[object] = set()

    def arm(self, task: asyncio.Task[Any], token: object, timeout: float) -> int:
        slot = int((self._loop.time() + timeout) * TICK) + 1
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = {}
            self._timers[slot] = self._loop.call_at(slot / TICK, self._expire, slot)
        bucket[task] = token
        return slot

    def disarm(self, slot: int, task: asyncio.Task[Any]) -> None:
        # An emptied bucket keeps its timer: attempts shorter than a tick would otherwise
        # create and cancel one timer each, which is the cost this module exists to avoid.
        bucket = self._buckets.get(slot)
        if bucket is not None:
            bucket.pop(task, None)

    def _expire(self, slot: int) -> None:
        self._timers.pop(slot, None)
        for task, token in self._buckets.pop(slot, {}).items():
            if not task.done():
                self._expired.add(token)
                task.cancel()

    def timed_out(self, token: object) -> bool:
        """Whether `token`'s attempt was cancelled by its deadline (asked once)."""
        if token in self._expired:
            self._expired.discard(token)
            return True
        return False

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._buckets.clear()
        self._expired.clear()
