"""Cleanup that must finish even though the coroutine doing it is being cancelled.

A public coroutine of aiotp either completes or leaves nothing behind when it is cancelled. Its
``except CancelledError`` branch therefore still has to wait for the cleanup it started (a
half-started actor to die, a killed process to be reaped) before it re-raises; these helpers do
that wait without being cut short by a second cancellation, and bounded, so that a cleanup that
never ends cannot hold the caller forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

__all__ = ["await_through_cancel", "retrieve"]

_log = logging.getLogger("aiotp.runtime")


def retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as read: nobody will, and asyncio would log it at ERROR."""
    if not fut.cancelled():
        fut.exception()


async def await_through_cancel(aw: Awaitable[Any] | None, timeout: float) -> None:
    """Wait for cleanup that must finish even though our caller is being cancelled.

    Used on the way out of a cancelled coroutine: further cancellations are absorbed (the
    caller re-raises its own CancelledError afterwards), and `timeout` bounds the wait so a
    cleanup that never ends cannot hold the caller forever.
    """
    if aw is None:
        return
    task = asyncio.ensure_future(aw)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            _log.warning("cleanup %r did not finish within %s s; leaving it", task, timeout)
            return
        try:
            await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError:
            continue
    if not task.cancelled() and task.exception() is not None:
        _log.warning("cleanup %r failed", task, exc_info=task.exception())
