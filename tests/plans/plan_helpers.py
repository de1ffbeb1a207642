"""Shared by the plan executor tests: counters that tools update from inside, so that overlap,
caps and lock rules are recorded as they happen, never inferred from timing."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Iterable

SAFETY = 10.0  # seconds: only a hang hits it; no test relies on anything being fast


class Gauge:
    """How many run at once, now and at most; safe from the loop and from threads."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0
        self.entered = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Gauge:
        with self._lock:
            self.now += 1
            self.entered += 1
            self.max = max(self.max, self.now)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


class Barrier:
    """`size` parties must all arrive before any goes on: a step passing it proves the other
    parties were running at the same time (a sequential run would wait forever)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.arrived = 0
        self.full = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.size:
            self.full.set()
        async with asyncio.timeout(SAFETY):
            await self.full.wait()


class Holdings:
    """Who holds which resource as the tools see it. A tool enters with what it reads and
    writes; any writer beside another holder, or reader beside a writer, is a violation."""

    def __init__(self) -> None:
        self.readers: collections.Counter[str] = collections.Counter()
        self.writers: collections.Counter[str] = collections.Counter()
        self.violations: list[str] = []
        self.max_readers: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def enter(self, who: str, reads: Iterable[str], writes: Iterable[str]) -> None:
        writes = set(writes)
        reads = set(reads) - writes
        with self._lock:
            for name in writes:
                if self.readers[name] or self.writers[name]:
                    self.violations.append(
                        f"{who} writes {name} beside {self.readers[name]} readers and "
                        f"{self.writers[name]} writers"
                    )
                self.writers[name] += 1
            for name in reads:
                if self.writers[name]:
                    self.violations.append(f"{who} reads {name} beside a writer")
                self.readers[name] += 1
                self.max_readers[name] = max(self.max_readers[name], self.readers[name])

    def leave(self, reads: Iterable[str], writes: Iterable[str]) -> None:
        writes = set(writes)
        reads = set(reads) - writes
        with self._lock:
            for name in writes:
                self.writers[name] -= 1
            for name in reads:
                self.readers[name] -= 1


async def until(predicate: Callable[[], bool]) -> None:
    """Wait until `predicate()` holds (it is about state other tasks change)."""
    async with asyncio.timeout(SAFETY):
        while not predicate():
            await asyncio.sleep(0.001)


async def settle() -> None:
    """Let every task that can run, run."""
    for _ in range(20):
        await asyncio.sleep(0)
