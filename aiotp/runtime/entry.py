"""`aiotp.run`: run a coroutine inside a fresh Runtime on a new loop, uvloop when installed.

Signals (what ``docker stop``, a service manager and Ctrl-C send): the first SIGTERM or SIGINT
cancels `main` and shuts the runtime down gracefully, as leaving ``async with Runtime()`` does
(every actor's ``terminate`` runs, workers finish or are stopped within their grace), then `run`
raises ``SystemExit(0)``: the process exits 0. A second signal while that shutdown runs exits at
once (status 128 + its number: 143 for SIGTERM, 130 for SIGINT); worker processes die with the
runtime anyway. Handlers are installed only when `run` is called from the main thread, and
removed when it returns (see `aiotp.runtime.stop_signals`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiotp.runtime.loop import loop_factory
from aiotp.runtime.runtime import Runtime
from aiotp.runtime.stop_signals import StopSignals

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
        # `main` runs as its own task: a signal cancels main, never the shutdown that follows
        # it (a signal during the normal end of `run` leaves that shutdown graceful).
        main_task: list[asyncio.Task[T]] = []

        def on_stop(_signum: int) -> None:
            if main_task and not main_task[0].done():
                main_task[0].cancel()

        stop = StopSignals(asyncio.get_running_loop(), on_stop)
        stopped_by_signal = False
        try:
            async with Runtime(**runtime_options) as rt:
                assert callable(main)
                main_task.append(asyncio.ensure_future(main(rt)))
                if stop.received is not None:
                    main_task[0].cancel()  # the signal came while the runtime started
                try:
                    result = await main_task[0]
                except asyncio.CancelledError:
                    this = asyncio.current_task()
                    if stop.received is None or (this is not None and this.cancelling()):
                        raise
                    stopped_by_signal = True
        finally:
            stop.remove()
        if stopped_by_signal:
            raise SystemExit(0)  # a graceful stop asked for by a signal
        return result

    async def _bare() -> T:
        assert inspect.isawaitable(main)
        return await main

    entry = _bare() if inspect.isawaitable(main) else _with_runtime()
    with asyncio.Runner(loop_factory=loop_factory(uvloop)) as runner:
        return runner.run(entry)
