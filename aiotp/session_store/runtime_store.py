"""The runtime's default session store (``rt.sessions``), swept in the background.

Created on first use with the defaults (``ttl=3600``, ``sweep_interval=60``,
``max_sessions=10_000``); pass your own with ``aiotp.Runtime(sessions=SessionStore(...))``.
Its sweeper runs while the runtime runs and is stopped, without a pending task, at shutdown.

Time: the store's TTLs and its sweeps follow the runtime's clock (``rt.clock``). A store left on
the default clock (``time.monotonic``) is given the runtime's, so on a `VirtualClock` a test
expires a session after an hour by advancing the clock an hour; a store built with a clock of its
own keeps it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiotp.session_store.store import SessionStore

__all__ = ["SessionsExtension", "runtime_sessions"]

KEY = "aiotp.sessions"


class SessionsExtension:
    """Runs the store's sweeps as one of the runtime's background jobs (`rt.jobs`), so the
    sweeper is tracked, its failures reported, and it never outlives the runtime."""

    def __init__(self, store: SessionStore, rt: Any = None) -> None:
        self.store = store
        self.rt = rt
        self.job: Any = None
        _adopt_clock(store, rt)

    async def start(self, rt: Any = None) -> None:
        self.rt = rt if rt is not None else self.rt
        if self.job is None and self.rt is not None:
            _adopt_clock(self.store, self.rt)
            clock = self.rt.clock
            # On real time the sweeper sleeps as it always did; a virtual clock's sleep is
            # passed only when there is one (a store of another kind need not take it).
            store = self.store
            sweeps = store.sweep_forever(clock.sleep) if clock.virtual else store.sweep_forever()
            self.job = await self.rt.jobs.spawn(sweeps, name="sessions sweeper")

    async def close(self) -> None:
        job, self.job = self.job, None
        if job is not None:
            await job.close()
        await self.store.stop()  # a sweeper the user started by hand


def runtime_sessions(rt: Any) -> SessionStore:
    def make(_rt: Any) -> SessionsExtension:
        ext = SessionsExtension(SessionStore(), rt)
        if rt.running:
            # Started on the loop: the caller may be sync code, so the spawn is a plain
            # callback that hands the start to the runtime's own jobs.
            rt.loop.call_soon(_start_later, ext)
        return ext

    ext: SessionsExtension = rt.extension(KEY, make)
    return ext.store


def _adopt_clock(store: Any, rt: Any) -> None:
    """A store on the default clock reads the runtime's instead (see the module docstring)."""
    clock = getattr(rt, "clock", None)
    if clock is not None and getattr(store, "clock", None) is time.monotonic:
        store.clock = clock.now


def _start_later(ext: SessionsExtension) -> None:
    rt = ext.rt
    if rt is not None and rt.running and ext.job is None:
        # A one-shot coroutine on the loop; the sweeper itself is a tracked job.
        asyncio.get_running_loop().create_task(ext.start())
