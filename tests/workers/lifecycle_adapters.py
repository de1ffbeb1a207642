"""Adapters for the worker lifecycle tests (importable by path from worker processes: tests/ is
on PYTHONPATH for children, see tests/conftest.py)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import aiotp

#: Where `FlakyStart` counts its starts, and which of them fail ("2,3": the 2nd and 3rd).
COUNTER_ENV = "AIOTP_TEST_START_COUNTER"
FAIL_ENV = "AIOTP_TEST_FAIL_STARTS"


def _rss_mb() -> float:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


class Lifecycle(aiotp.Adapter):
    """One worker's identity, a tool that holds its thread, and one that holds memory."""

    def setup(self) -> None:
        self.hoard: list[bytes] = []

    @aiotp.tool
    def whoami(self) -> str:
        return f"{os.getpid()}:{threading.get_ident()}"

    @aiotp.tool
    def echo(self, value: int = 0) -> int:
        return value

    @aiotp.tool
    def block_until(self, path: str, limit: float = 60.0) -> bool:
        """Hold the calling thread (no GIL-free wait the worker could answer pings through)
        until `path` exists; the test decides when, no duration is guessed."""
        deadline = time.monotonic() + limit
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    @aiotp.tool
    def hog(self, mb: int) -> float:
        """Keep `mb` MiB alive and really resident (every page written), return the RSS."""
        self.hoard.append(b"\x01" * (mb * 1024 * 1024))
        return _rss_mb()

    @aiotp.tool
    def rss(self) -> float:
        return _rss_mb()


class FlakyStart(Lifecycle):
    """Counts its starts in a file; the starts listed in FAIL_ENV fail in setup."""

    def setup(self) -> None:
        super().setup()
        path = Path(os.environ[COUNTER_ENV])
        with open(f"{path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # starts may overlap: count each one exactly once
            n = int(path.read_text()) + 1 if path.exists() else 1
            # Replaced in one step: a reader never sees a half-written count.
            Path(f"{path}.tmp").write_text(str(n))
            os.replace(f"{path}.tmp", path)
        failing = {int(x) for x in os.environ.get(FAIL_ENV, "").split(",") if x}
        if n in failing:
            raise RuntimeError(f"start {n} fails on purpose")
