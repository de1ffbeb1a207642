"""A pool of thread workers: adapters in this process, a non-thread-safe one serialised, and
sessions that stick to the worker that served them last (affinity)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiotp


class Counter(aiotp.Adapter):
    """Not thread-safe: the pool never runs two of its requests at once per worker."""

    def setup(self) -> None:
        self.calls = 0

    @aiotp.tool
    def bump(self) -> str:
        self.calls += 1  # unguarded on purpose: thread_safe = False protects it
        return f"{threading.current_thread().name}: {self.calls}"


class Cache(aiotp.Adapter):
    """Thread-safe: shared state behind self.lock, per-thread scratch in thread_local."""

    thread_safe = True

    def setup(self) -> None:
        self.store: dict[str, Any] = {}

    @aiotp.tool
    def put(self, key: str, value: Any) -> int:
        with self.lock:
            self.store[key] = value
            return len(self.store)

    @aiotp.tool
    def get(self, key: str) -> Any:
        scratch = self.thread_local("scratch", list)
        scratch.append(key)
        with self.lock:
            return self.store.get(key)

    @aiotp.tool
    async def ping(self) -> str:  # async tools run on the runtime's loop
        await asyncio.sleep(0)
        return "pong"


async def main(rt: aiotp.Runtime, say: Any = print) -> None:
    await rt.start_pool("counter", Counter, profile="thread", size=2, threads_per_worker=4)
    await rt.start_pool("cache", Cache, profile="thread", size=2, threads_per_worker=4)
    results = await asyncio.gather(*(rt.execute("counter", "bump") for _ in range(6)))
    say(f"non-thread-safe adapter, 6 concurrent calls: {sorted(results)}")
    await rt.execute("cache", "put", {"key": "a", "value": 1})
    say(f"thread-safe adapter: get('a') = {await rt.execute('cache', 'get', {'key': 'a'})}")
    say(f"async tool: {await rt.execute('cache', 'ping')}")
    first = await rt.execute("counter", "bump", session="alice")
    again = await rt.execute("counter", "bump", session="alice")
    worker = rt.sessions.get("alice").last_worker_id
    say(f"session 'alice' sticks to worker {worker}: {first!r} then {again!r}")
    stats = rt.pool_stats("counter")
    say(f"stats: {stats.requests} requests, {stats.busy} busy, {stats.live} workers")


if __name__ == "__main__":
    aiotp.run(main)
