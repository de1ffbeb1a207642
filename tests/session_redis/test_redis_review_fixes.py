"""Regressions of a hostile review of the Redis store and its pool integration: each test
failed before its fix. A real redis-server throughout; faults are real ones (writes paused on
the server with CLIENT PAUSE), not stand-ins."""

from __future__ import annotations

from session_adapters import Stateful

import aiotp
from aiotp.session_store.redis_store import RedisSessionStore
from aiotp.workers.api import registry


class OnePinLost(RedisSessionStore):
    """Its first pin write meets a server that does not accept writes (paused past the store's
    timeout), then the server is let go: the write really times out, nothing simulated."""

    lost = 0

    async def pin(self, session_id: str, pool: str, worker_id: str | None) -> None:
        if self.lost:
            await super().pin(session_id, pool, worker_id)
            return
        self.lost += 1
        admin = self._redis()
        await admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        try:
            await super().pin(session_id, pool, worker_id)
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")


async def test_a_failed_pin_write_keeps_the_pin_and_the_state(redis_url: str, prefix: str) -> None:
    store = OnePinLost(redis_url, prefix=prefix, timeout=0.3)
    try:
        async with aiotp.Runtime(sessions=store) as rt:
            await rt.start_pool(
                "p", Stateful, profile="thread", size=2, heartbeat=None, affinity="strict_queue"
            )
            counts = [(await rt.execute("p", "bump", {}, session="s"))["count"] for _ in range(4)]
            assert store.lost == 1
            assert counts == [1, 2, 3, 4]  # was [1, 1, 2, 3]: the store's None read as a move
            pinned = registry(rt).get("p").router.pins["s"].worker_id
            assert (await store.peek("s")).affinity == {"p": pinned}  # written again
    finally:
        await store.stop()
