"""Adapters for the streaming tests (importable by path from worker processes: tests/workers is
on PYTHONPATH for children, see tests/conftest.py)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator

import aiotp


class Abort(BaseException):
    """Not an Exception: the kind of thing (like KeyboardInterrupt) that escapes `except
    Exception` and, raised into an event loop, would stop it."""


def _record(path: str, text: str) -> None:
    """Atomically, so that a reader never sees half a number."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Streams(aiotp.Adapter):
    thread_safe = True

    @aiotp.tool
    def stop_iteration(self) -> None:
        raise StopIteration("a sync tool leaked StopIteration")

    @aiotp.tool
    def echo(self, value: object = None) -> object:
        return value

    @aiotp.tool
    async def agen_fails(self, after: int) -> AsyncIterator[int]:
        for i in range(after):
            yield i
        raise ValueError(f"agen broke after {after} items")

    @aiotp.tool
    def gen_aborts(self, after: int) -> Iterator[int]:
        yield from range(after)
        raise Abort(f"gen aborted after {after} items")

    @aiotp.tool
    def produce(self, n: int, produced: str, finished: str = "") -> Iterator[int]:
        """Yields 0..n-1, recording in file `produced` how many it has produced so far, and
        writing file `finished` when the generator ends (normally or closed)."""
        try:
            for i in range(n):
                _record(produced, str(i + 1))
                yield i
        finally:
            if finished:
                _record(finished, "closed")

    @aiotp.tool
    async def aproduce(self, n: int, produced: str, finished: str = "") -> AsyncIterator[int]:
        """`produce` as an async generator."""
        try:
            for i in range(n):
                _record(produced, str(i + 1))
                yield i
        finally:
            if finished:
                _record(finished, "closed")

    @aiotp.tool
    def slow(self, n: int, delay: float, finished: str = "") -> Iterator[int]:
        try:
            for i in range(n):
                time.sleep(delay)
                yield i
        finally:
            if finished:
                _record(finished, "closed")
