"""Adapters for the guarantee tests (importable by path from worker processes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiotp


class Tools(aiotp.Adapter):
    thread_safe = True

    @aiotp.tool
    def quick(self, value: Any = None) -> Any:
        return value

    @aiotp.tool
    def pid(self) -> int:
        return os.getpid()

    @aiotp.tool
    def block(self, seconds: float, marker: str = "", started: str = "") -> float:
        """A sync tool: cannot be interrupted; writes `started` when it starts (so a test
        knows it runs, not merely that it was sent) and `marker` when it really ends."""
        if started:
            Path(started).write_text("started")
        time.sleep(seconds)
        if marker:
            Path(marker).write_text("ended")
        return seconds

    @aiotp.tool
    async def wait(self, seconds: float, marker: str = "") -> float:
        """An async tool: records in `marker` whether it was cancelled or ended."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if marker:
                Path(marker).write_text("cancelled")
            raise
        if marker:
            Path(marker).write_text("ended")
        return seconds

    @aiotp.tool
    def spawn_child(self, seconds: float = 60.0) -> int:
        """Starts a grandchild process (as a tool wrapping a CLI would) and returns its pid."""
        child = subprocess.Popen(["sleep", str(seconds)])
        return child.pid

    @aiotp.tool
    def stop_iteration(self) -> None:
        raise StopIteration("a sync tool leaking StopIteration")


class SlowSetup(aiotp.Adapter):
    """Takes a while to set up, so a start can be cancelled in the middle."""

    def setup(self) -> None:
        time.sleep(float(os.environ.get("AIOTP_TEST_SETUP_DELAY", "0.5")))

    @aiotp.tool
    def quick(self, value: Any = None) -> Any:
        return value


class BrokenSetup(aiotp.Adapter):
    def setup(self) -> None:
        raise RuntimeError("weights missing")

    @aiotp.tool
    def quick(self, value: Any = None) -> Any:
        return value


class ModelTools(Tools):
    """Tools for the pool model test: a generator too."""

    @aiotp.tool
    def count(self, n: int, delay: float = 0.0) -> Any:
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield i


class Generators(aiotp.Adapter):
    @aiotp.tool
    def count(self, n: int) -> Any:
        yield from range(n)

    @aiotp.tool
    def fail_after(self, n: int) -> Any:
        yield from range(n)
        raise KeyError("gone mid-stream")


class Rude(aiotp.Adapter):
    """Tools raising what Python does not count as an error."""

    @aiotp.tool
    def exits(self) -> None:
        raise SystemExit(3)

    @aiotp.tool
    def interrupts(self) -> None:
        raise KeyboardInterrupt

    @aiotp.tool
    async def async_exits(self) -> None:
        raise SystemExit(4)

    @aiotp.tool
    async def async_interrupts(self) -> None:
        raise KeyboardInterrupt

    @aiotp.tool
    def gen_exits(self) -> Any:
        yield 1
        raise SystemExit(5)
