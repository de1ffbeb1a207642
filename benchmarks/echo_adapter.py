"""The adapter the pool benchmarks run (importable by path from worker processes)."""

from __future__ import annotations

from typing import Any

import aiotp


class Echo(aiotp.Adapter):
    thread_safe = True

    @aiotp.tool
    def echo(self, value: Any = None) -> Any:
        return value
