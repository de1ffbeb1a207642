"""What ``docker stop``, a service manager and Ctrl-C send: SIGTERM and SIGINT, as a stop request.

The first SIGTERM or SIGINT asks for a graceful stop (the callback runs once, on the loop); a
second one, while that stop runs, exits the process at once with status 128 + the signal's
number, as a shell reports a process killed by it. Worker processes die with their runtime
anyway (they watch their parent), so the fast exit leaves nothing behind.

Handlers are installed only from the main thread (Python delivers signals there and nowhere
else), and `remove` puts the previous dispositions back (a custom handler, or SIGINT ignored by
``nohup``). Once the first signal came, the second is watched by a plain Python signal handler
as well as the loop's: a stop whose cleanup blocks the loop (a synchronous flush in a
``terminate``) must still yield to an operator who asks twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["STOP_SIGNALS", "StopSignals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Turns the first stop signal into `on_stop(signum)`; a second one ends the process."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_stop: Callable[[int], object]) -> None:
        self._loop = loop
        self._on_stop = on_stop
        self.received: int | None = None  # the first stop signal's number, once one came
        self._installed: list[int] = []
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous = signal.getsignal(signum)
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(signum, self._handle, signum)
                    self._installed.append(signum)
                    self._previous[signum] = previous

    @property
    def installed(self) -> bool:
        return bool(self._installed)

    def _handle(self, signum: int) -> None:
        if self.received is not None:
            _force_exit(signum)
        self.received = signum
        for other in self._installed:
            # From now on the next signal ends the process even while the loop is blocked.
            with contextlib.suppress(Exception):
                signal.signal(other, _force_exit_handler)
        self._on_stop(signum)

    def remove(self) -> None:
        for signum in self._installed:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(signum)
            previous = self._previous.get(signum)
            if previous is not None:
                with contextlib.suppress(Exception):
                    signal.signal(signum, previous)
        self._installed.clear()


def _force_exit(signum: int) -> None:
    name = signal.Signals(signum).name
    with contextlib.suppress(OSError):
        os.write(2, f"aiotp: second {name} during the stop: exiting now\n".encode())
    os._exit(128 + signum)  # asked twice: stop now


def _force_exit_handler(signum: int, _frame: Any) -> None:
    _force_exit(signum)
