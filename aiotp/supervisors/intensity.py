"""Restart intensity: at most `max_restarts` restarts in any window of `max_seconds`.

OTP's rule: when a supervisor would make more than ``max_restarts`` restarts within
``max_seconds``, it gives up, shuts its children down and exits, so that its own supervisor
decides (escalation). Restarts older than the window stop counting, so a child that crashes now
and then is restarted forever, while one that crashes in a loop brings the subtree down.
Defaults 3 in 5 s, as Elixir's.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

__all__ = ["RestartIntensity"]


class RestartIntensity:
    def __init__(
        self, max_restarts: int, max_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        if not isinstance(max_seconds, int | float) or max_seconds <= 0:
            raise ValueError(f"max_seconds must be a positive number, got {max_seconds!r}")
        self.max_restarts = max_restarts
        self.max_seconds = float(max_seconds)
        self._clock = clock
        self._stamps: collections.deque[float] = collections.deque()

    def add(self) -> bool:
        """Record one restart; False when it exceeds the intensity (the supervisor gives up)."""
        now = self._clock()
        stamps = self._stamps
        stamps.append(now)
        horizon = now - self.max_seconds
        while stamps and stamps[0] < horizon:
            stamps.popleft()
        return len(stamps) <= self.max_restarts

    @property
    def recent(self) -> int:
        horizon = self._clock() - self.max_seconds
        return sum(1 for t in self._stamps if t >= horizon)
