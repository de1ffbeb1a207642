"""Ray workers, actor side: the lane's accounting, which heartbeats and stopping read.

Apart from ray_host.py (the actor) so that the rules of "is this worker alive" and "is it
idle" sit in one place, under one lock:

- ``alive(timeout)`` (for ``ping``): a lane thread is free, or paused by a slow stream consumer,
  or a lane job finished while we waited, or a lane thread awaiting an async tool has an event
  loop that runs our callback. That last sign is why an async tool that awaits for longer than
  the heartbeat window keeps its worker, as a process worker's loop would answer; a sync tool
  (or an async one blocking its loop) gives no sign and its worker is replaced when stuck.
- ``idle(grace)`` (for ``drain``): no request runs, whoever sent it (the owner's pool or
  another runtime attached to this worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

__all__ = ["Lane"]


class Lane:
    """Counts of a lane of `threads` threads: tools running, streams paused for credit, lane
    jobs finished (progress a waiting ping can see), loops awaiting an async tool."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._cond = threading.Condition(threading.Lock())
        self._running = 0
        self._paused = 0
        self._progress = 0
        self._awaiting: dict[int, asyncio.AbstractEventLoop] = {}  # by lane thread

    def enter(self) -> None:
        with self._cond:
            self._running += 1

    def leave(self) -> None:
        with self._cond:
            self._running -= 1
            self._progress += 1
            self._cond.notify_all()

    def pause(self, paused: bool) -> None:
        """A stream waits for credit (True) or goes on (False): waiting is not being stuck."""
        with self._cond:
            self._paused += 1 if paused else -1
            self._cond.notify_all()

    @contextlib.contextmanager
    def awaiting(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """While this lane thread runs `loop` for an async tool, pings may ask that loop."""
        me = threading.get_ident()
        with self._cond:
            self._awaiting[me] = loop
        try:
            yield
        finally:
            with self._cond:
                self._awaiting.pop(me, None)

    def alive(self, timeout: float) -> bool:
        """True once the lane shows a sign of life (see the module docstring); False after
        `timeout` s without any."""
        answered = [False]

        def answer() -> None:  # runs on a lane thread's loop: that loop is not blocked
            with self._cond:
                answered[0] = True
                self._cond.notify_all()

        with self._cond:
            if self._running - self._paused < self.threads:
                return True
            seen = self._progress
            for loop in self._awaiting.values():
                # Left in a loop whose tool ended meanwhile, it runs at that loop's next use:
                # harmless (the tool's end was progress, so we answered already).
                with contextlib.suppress(RuntimeError):  # its loop closed
                    loop.call_soon_threadsafe(answer)
            return self._cond.wait_for(
                lambda: (
                    answered[0]
                    or self._progress != seen
                    or self._running - self._paused < self.threads
                ),
                timeout,
            )

    def idle(self, grace: float) -> int:
        """Wait until no request runs, at most `grace` s; how many still run."""
        with self._cond:
            self._cond.wait_for(lambda: self._running == 0, max(grace, 0.0))
            return self._running
