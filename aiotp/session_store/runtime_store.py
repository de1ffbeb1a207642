"""The runtime's default session store (``rt.sessions``), swept in the background.

Created on first use with the defaults (``ttl=3600``, ``sweep_interval=60``,
``max_sessions=10_000``); pass your own with ``aiotp.Runtime(sessions=SessionStore(...))``.
Its sweeper runs while the runtime runs and is stopped, without a pending task, at shutdown.
"""

from __future__ import annotations

import asyncio
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

    async def start(self, rt: Any = None) -> None:
        self.rt = rt if rt is not None else self.rt
        if self.job is None and self.rt is not None:
            self.job = await self.rt.jobs.spawn(self.store.sweep_forever(), name="sessions sweeper")

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


def _start_later(ext: SessionsExtension) -> None:
    rt = ext.rt
    if rt is not None and rt.running and ext.job is None:
        # A one-shot coroutine on the loop; the sweeper itself is a tracked job.
        asyncio.get_running_loop().create_task(ext.start())
