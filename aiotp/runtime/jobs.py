"""The runtime's background jobs: one `aiojobs.Scheduler` that the runtime owns.

Work that no actor awaits (heartbeat pings, the session sweeper, async tools of thread workers,
replacement starts) would otherwise be bare tasks: nobody tracks them, an exception in one is
lost in "Task exception was never retrieved", and one may outlive the runtime. Every such job
runs here instead::

    job = await rt.jobs.spawn(sweep_forever(), name="sessions sweeper")

Guarantees:
- Every job is tracked until it ends; `active` counts them.
- An exception that ends a job nobody waits on is logged at ERROR with the job's name and the
  traceback, never lost. Jobs whose outcome someone awaits (`job.wait()`) report to that waiter.
- `close()` (called by `Runtime.shutdown` after every actor is gone) cancels what is left and
  waits at most ``close_timeout`` (default 5 s, a worker's shutdown) per job, so no job outlives
  the runtime. Spawning after close raises `RuntimeClosed`.

Why aiojobs and not a set of tasks: it already does the tracking, the bounded close and the
exception routing, and it is the field's well-kept library for exactly this job.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiojobs

from aiotp.runtime.errors import RuntimeClosed

__all__ = ["Jobs"]

T = TypeVar("T")
_log = logging.getLogger("aiotp.jobs")


class Jobs:
    """Background jobs of one runtime (see the module docstring)."""

    def __init__(self, owner: str, close_timeout: float = 5.0) -> None:
        self._owner = owner
        self._scheduler = aiojobs.Scheduler(
            close_timeout=close_timeout,
            limit=None,
            exception_handler=self._report,
        )

    def __repr__(self) -> str:
        return f"<Jobs of {self._owner} active={self.active}>"

    @property
    def active(self) -> int:
        return self._scheduler.active_count

    @property
    def closed(self) -> bool:
        return self._scheduler.closed

    async def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> aiojobs.Job[T]:
        """Run `coro` as a tracked job; `RuntimeClosed` (and `coro` closed) after shutdown."""
        if self._scheduler.closed:
            coro.close()
            raise RuntimeClosed(f"job {name!r}: the runtime's job scheduler is closed")
        return await self._scheduler.spawn(coro, name=name)

    async def close(self) -> None:
        """Cancel every job still running and wait for them (bounded, see the module doc)."""
        await self._scheduler.close()

    def _report(self, _scheduler: aiojobs.Scheduler, context: dict[str, Any]) -> None:
        job = context.get("job")
        name = job.get_name() if job is not None else None
        exc = context.get("exception")
        _log.error(
            "%s: background job %r failed: %s",
            self._owner,
            name,
            context.get("message", "no message"),
            exc_info=exc if isinstance(exc, BaseException) else None,
        )
