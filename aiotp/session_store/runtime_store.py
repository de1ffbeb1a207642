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
    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def start(self) -> None:
        self.store.start()

    async def close(self) -> None:
        await self.store.stop()


def runtime_sessions(rt: Any) -> SessionStore:
    def make(_rt: Any) -> SessionsExtension:
        ext = SessionsExtension(SessionStore())
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return ext  # started when the runtime starts
        if rt.running:
            ext.store.start()
        return ext

    ext: SessionsExtension = rt.extension(KEY, make)
    return ext.store
