"""Adapters for the plan tests' pool steps (importable by path from worker processes as
"plan_adapters:PlanTools": a process worker gets the runtime's sys.path, tests/plans included)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import aiotp


class PlanTools(aiotp.Adapter):
    thread_safe = True

    @aiotp.tool
    def square(self, x: int) -> int:
        return x * x

    @aiotp.tool
    def square_once_killed(self, x: int, marker: str) -> int:
        """The first call anywhere writes its pid to `marker` and hangs (the test SIGKILLs this
        worker); any later call returns x*x."""
        path = Path(marker)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return x * x
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(3600)
        return -1
