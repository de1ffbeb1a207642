"""Adapters for the Ray pool tests (imported by path in Ray workers: the fixtures put this
directory on the PYTHONPATH that Ray's processes inherit)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiotp


class RayEcho(aiotp.Adapter):
    """The workhorse: echo, sleep, fail, stream, report where it runs."""

    thread_safe = True

    def setup(self) -> None:
        self.produced = 0
        self.closed = 0
        self.calls = 0

    @aiotp.tool
    def echo(self, value: Any = None) -> Any:
        self.calls += 1
        return value

    @aiotp.tool(idempotent=True)
    def twice(self, x: int) -> int:
        return 2 * x

    @aiotp.tool
    def calls_seen(self) -> int:
        return self.calls

    @aiotp.tool
    def where(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "node": ctx.get_node_id(), "actor": ctx.get_actor_name()}

    @aiotp.tool
    def assigned(self) -> dict[str, float]:
        import ray

        return dict(ray.get_runtime_context().get_assigned_resources())

    @aiotp.tool
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @aiotp.tool
    def sleep_marked(self, path: str, seconds: float) -> float:
        """`sleep`, first creating the file `path`: a test sees the tool run (not only sent)."""
        with open(path, "w"):
            pass
        time.sleep(seconds)
        return seconds

    @aiotp.tool(idempotent=True)
    def slow_twice(self, x: int, seconds: float) -> int:
        time.sleep(seconds)
        return 2 * x

    @aiotp.tool
    async def async_sleep(self, seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.closed += 1
            raise
        return "done"

    @aiotp.tool
    def crash(self, message: str = "boom") -> None:
        raise ValueError(message)

    @aiotp.tool
    def exit_tool(self) -> None:
        raise SystemExit(3)

    @aiotp.tool
    def unpackable(self) -> Any:
        return object()

    @aiotp.tool
    def count(self, n: int, delay: float = 0.0) -> Iterator[int]:
        try:
            for i in range(n):
                if delay:
                    time.sleep(delay)
                self.produced += 1
                yield i
        finally:
            self.closed += 1

    @aiotp.tool
    async def acount(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @aiotp.tool
    def failing_stream(self, n: int) -> Iterator[int]:
        yield from range(n)
        raise KeyError("after items")

    @aiotp.tool
    def stats(self) -> dict[str, int]:
        return {"produced": self.produced, "closed": self.closed}

    @aiotp.tool
    def remember(self, key: str, value: Any, *, session: aiotp.WorkerSession | None) -> Any:
        assert session is not None
        old = session.state.get(key)
        session.state[key] = value
        return [old, dict(session.settings)]

    @aiotp.tool
    def remember_each(
        self, key: str, values: list[Any], *, session: aiotp.WorkerSession | None
    ) -> Iterator[Any]:
        """A stream over the session's state: yields the value each one replaces."""
        assert session is not None
        for value in values:
            yield session.state.get(key)
            session.state[key] = value

    @aiotp.tool
    def threads(self) -> int:
        return threading.active_count()


class SerialAdapter(aiotp.Adapter):
    """Not thread-safe: never entered twice at once, even with several lane threads."""

    def setup(self) -> None:
        self.inside = 0
        self.max_inside = 0
        self.guard = threading.Lock()

    @aiotp.tool
    def enter(self, seconds: float) -> int:
        with self.guard:
            self.inside += 1
            self.max_inside = max(self.max_inside, self.inside)
        time.sleep(seconds)
        with self.guard:
            self.inside -= 1
        return self.max_inside


class FailingSetup(aiotp.Adapter):
    def setup(self) -> None:
        raise RuntimeError("no model file")

    @aiotp.tool
    def echo(self, value: Any = None) -> Any:
        return value
