"""The adapters of examples/web_service.py, in a module of their own: a process worker imports
its adapter by path ("web_adapters:Model"), and this module imports only aiotp, so a worker
does not pay for FastAPI and pydantic at start."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import aiotp


class Model(aiotp.Adapter):
    """CPU work in a worker process; keeps a per-session running total in the worker."""

    thread_safe = True

    @aiotp.tool
    def predict(
        self, x: float, work_ms: float = 0.0, *, session: aiotp.WorkerSession | None = None
    ) -> dict[str, Any]:
        if work_ms:
            time.sleep(work_ms / 1000)  # stands for real CPU work
        total = x * 2.0
        if session is not None:
            total += session.state.get("total", 0.0)
            session.state["total"] = total
        return {"y": x * 2.0, "session_total": total, "pid": os.getpid()}

    @aiotp.tool
    def count(self, n: int) -> Iterator[int]:
        for i in range(n):
            time.sleep(0.001)
            yield i


class Directory(aiotp.Adapter):
    """A blocking lookup (a database driver, a file) run on the thread pool."""

    thread_safe = True

    @aiotp.tool
    def lookup(self, key: str) -> str:
        time.sleep(0.002)
        return key.upper()
