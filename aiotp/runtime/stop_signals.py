"""What ``docker stop``, a service manager and Ctrl-C send: SIGTERM and SIGINT, as a stop request.

The first SIGTERM or SIGINT asks for a graceful stop (the callback runs once, on the loop); a
second one, while that stop runs, exits the process at once with status 128 + the signal's
number, as a shell reports a process killed by it. Worker processes die with their runtime
anyway (they watch their parent), so the fast exit leaves nothing behind.

Handlers are installed only from the main thread (Python delivers signals there and nowhere
else), and `remove` puts the previous dispositions back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable

__all__ = ["STOP_SIGNALS", "StopSignals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Turns the first stop signal into `on_stop(signum)`; a second one ends the process."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_stop: Callable[[int], object]) -> None:
        self._loop = loop
        self._on_stop = on_stop
        self.received: int | None = None  # the first stop signal's number, once one came
        self._installed: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, self._handle, signum)
                    self._installed.append(signum)

    @property
    def installed(self) -> bool:
        return bool(self._installed)

    def _handle(self, signum: int) -> None:
        if self.received is not None:
            os._exit(128 + signum)  # asked twice: stop now
        self.received = signum
        self._on_stop(signum)

    def remove(self) -> None:
        for signum in self._installed:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(signum)
        self._installed.clear()
