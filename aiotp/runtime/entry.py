"""`aiotp.run`: run a coroutine inside a fresh Runtime on a new loop, uvloop when installed.

Signals (what ``docker stop`` and a service manager send): the first SIGTERM cancels `main` and
shuts the runtime down gracefully, as leaving ``async with Runtime()`` does (every actor's
``terminate`` runs, workers finish or are stopped within their grace), then `run` raises
``SystemExit(0)``: the process exits 0. A second SIGTERM while that shutdown runs exits at once
(status 143); worker processes die with the runtime anyway. SIGINT keeps asyncio's behaviour:
the same graceful shutdown, then ``KeyboardInterrupt``. Handlers are installed only when `run`
is called from the main thread, and removed when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiotp.runtime.loop import loop_factory
from aiotp.runtime.runtime import Runtime

__all__ = ["run"]

T = TypeVar("T")


def run(
    main: Callable[[Runtime], Awaitable[T]] | Awaitable[T],
    *,
    uvloop: bool | None = None,
    **runtime_options: Any,
) -> T:
    """Run `main(rt)` inside a fresh Runtime on a new loop (uvloop when installed) and return
    its result. A bare awaitable is run as is, on the same kind of loop, without a Runtime.
    `runtime_options` go to `Runtime(...)` (e.g. ``shutdown_timeout=1.0``)."""

    async def _with_runtime() -> T:
        sigterm = _SigtermWatch(asyncio.get_running_loop(), asyncio.current_task())
        try:
            async with Runtime(**runtime_options) as rt:
                assert callable(main)
                return await main(rt)
        except asyncio.CancelledError:
            if sigterm.fired:
                raise SystemExit(0) from None  # a graceful stop asked for by SIGTERM
            raise
        finally:
            sigterm.remove()

    async def _bare() -> T:
        assert inspect.isawaitable(main)
        return await main

    entry = _bare() if inspect.isawaitable(main) else _with_runtime()
    with asyncio.Runner(loop_factory=loop_factory(uvloop)) as runner:
        return runner.run(entry)


class _SigtermWatch:
    """SIGTERM cancels `task` once (a graceful stop); a second one exits at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any] | None) -> None:
        self.loop = loop
        self.task = task
        self.count = 0
        self.installed = False
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGTERM, self._handle)
                self.installed = True

    def _handle(self) -> None:
        self.count += 1
        if self.count > 1:
            os._exit(128 + signal.SIGTERM)  # asked twice: stop now
        if self.task is not None:
            self.task.cancel()

    @property
    def fired(self) -> bool:
        return self.count > 0

    def remove(self) -> None:
        if self.installed:
            with contextlib.suppress(Exception):
                self.loop.remove_signal_handler(signal.SIGTERM)
