"""How a Runtime shuts down: the order, the bounds, and what a cancelled shutdown still owes.

- Actors spawned from outside any actor (roots) stop in reverse start order, each with
  ``rt.stop(ref, "shutdown")`` bounded by ``shutdown_timeout`` and then killed; their owners stop
  the actors they started (a supervisor stops its children). Whatever is left is stopped the
  same way, a few rounds, for children started while their owners stopped.
- Then the extensions close (pools' registry, the session store), then the background jobs.
- Idempotent: a second call while one runs waits for it; after STOPPED it returns at once.
- Safe to cancel: a cancelled shutdown kills every actor still alive, closes the extensions and
  jobs, reaches STOPPED, and re-raises `CancelledError`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiotp.runtime.cancel import await_through_cancel

if TYPE_CHECKING:
    from aiotp.runtime.runtime import Runtime

__all__ = ["shutdown"]


async def shutdown(rt: Runtime) -> None:
    from aiotp.runtime.runtime import _State

    if rt._state is _State.STOPPED:
        return
    if rt._state is _State.NEW:
        rt._state = _State.STOPPED
        return
    if rt._state is _State.STOPPING:
        assert rt._stopped is not None
        await rt._stopped.wait()
        return
    rt._move(_State.STOPPING)
    try:
        roots = [ref for ref in rt._actors if ref._parent is None]
        for ref in reversed(roots):
            await rt.stop_or_kill(ref, "shutdown", rt.shutdown_timeout)
        for _ in range(3):  # children started while their owners stopped, if any
            for ref in reversed(list(rt._actors)):
                await rt.stop_or_kill(ref, "shutdown", rt.shutdown_timeout)
        await _close_extensions(rt)
    except asyncio.CancelledError:
        await await_through_cancel(_force_stop(rt), rt.shutdown_timeout)
        raise
    finally:
        rt._move(_State.STOPPED)
        assert rt._stopped is not None
        rt._stopped.set()


async def _close_extensions(rt: Runtime) -> None:
    for ext in reversed(list(rt._extensions.values())):
        close = getattr(ext, "close", None)
        if close is not None:
            await close()
    if rt._jobs is not None:
        await rt._jobs.close()


async def _force_stop(rt: Runtime) -> None:
    """What a cancelled shutdown still owes: kill every actor, then close the rest."""
    for ref in reversed(list(rt._actors)):
        rt._signals.exit(ref, "kill", None)
    tasks = {ref._task for ref in list(rt._actors) if ref._task is not None}
    if tasks:
        await asyncio.wait(tasks, timeout=rt.shutdown_timeout)
    await _close_extensions(rt)
