"""`aiotp.run`: run a coroutine inside a fresh Runtime on a new loop, uvloop when installed."""

from __future__ import annotations

import asyncio
import inspect
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
        async with Runtime(**runtime_options) as rt:
            assert callable(main)
            return await main(rt)

    async def _bare() -> T:
        assert inspect.isawaitable(main)
        return await main

    entry = _bare() if inspect.isawaitable(main) else _with_runtime()
    with asyncio.Runner(loop_factory=loop_factory(uvloop)) as runner:
        return runner.run(entry)
