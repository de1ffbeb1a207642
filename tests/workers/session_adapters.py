"""Adapters for the affinity, session-state and retry tests (importable by path from worker
processes: tests/ is on PYTHONPATH for children, see tests/conftest.py)."""

from __future__ import annotations

import gc
import itertools
import os
import time
from pathlib import Path
from typing import Any

import aiotp

_instances = itertools.count(1)


class Stateful(aiotp.Adapter):
    """One request at a time; keeps a per-session counter in the worker."""

    def setup(self) -> None:
        # Unique per worker, even for thread workers of one process (an id() may be reused).
        self.me = f"{os.getpid()}:{next(_instances)}"

    @aiotp.tool
    def bump(self, delay: float = 0.0, *, session: aiotp.WorkerSession | None) -> dict[str, Any]:
        if delay:
            time.sleep(delay)
        if session is None:
            return {"worker": self._me(), "count": None, "settings": None}
        session.state["count"] = session.state.get("count", 0) + 1
        return {
            "worker": self._me(),
            "count": session.state["count"],
            "settings": dict(session.settings),
            "session": session.id,
        }

    @aiotp.tool
    def where(self, delay: float = 0.0) -> str:
        if delay:
            time.sleep(delay)
        return self._me()

    @aiotp.tool
    def held(self) -> int:
        """How many sessions this worker holds state for (a leak shows here)."""
        gc.collect()
        return sum(isinstance(o, aiotp.WorkerSession) for o in gc.get_objects())

    @aiotp.tool
    def clash(self, session: str) -> str:  # a positional `session`: a plain argument
        return session

    @aiotp.tool
    def wait_for(self, path: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while not Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._me()

    @aiotp.tool(idempotent=True)
    def crash_once(self, marker: str) -> str:
        """Kills its worker process the first time (per marker file), answers afterwards."""
        path = Path(marker)
        if not path.exists():
            path.write_text("crashed")
            os._exit(7)
        return self._me()

    @aiotp.tool
    def crash_once_unsafe(self, marker: str) -> str:
        path = Path(marker)
        if not path.exists():
            path.write_text("crashed")
            os._exit(7)
        return self._me()

    @aiotp.tool(idempotent=True)
    def fine(self) -> str:
        return self._me()

    @aiotp.tool
    def die(self) -> None:
        os._exit(3)

    def _me(self) -> str:
        return self.me
