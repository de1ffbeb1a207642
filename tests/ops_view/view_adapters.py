"""The adapter of the view tests' process pool (importable by path from a worker process)."""

from __future__ import annotations

import aiotp


class Echo(aiotp.Adapter):
    thread_safe = True

    @aiotp.tool
    def echo(self, x: int) -> int:
        return x

    @aiotp.tool
    def fail(self) -> None:
        raise ValueError("asked to fail")
