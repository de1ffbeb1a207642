"""The whole-store half of `RedisSessionStore`: counting, listing, sweeping, stats, and the
background sweeps the runtime runs (a mixin: the store owns the state named here).

A sweep claims expired and heartbeat-abandoned sessions ``sweep_chunk`` at a time, each chunk one
script (`redis_lua.SWEEP`), so Redis never runs one long script and the loop yields between
chunks; this instance runs the removal hooks of the sessions its scripts claimed, and no other
instance does. `sweep_forever` is what `aiotp.session_store.runtime_store` runs as a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self, TypeVar

from redis.exceptions import RedisError

from aiotp.session_store.errors import SessionStoreUnavailable
from aiotp.session_store.store import StoreStats

if TYPE_CHECKING:
    from aiotp.session_store.events import _Registry
    from aiotp.session_store.redis_events import Listener

__all__ = ["RedisWholeStore", "check_cancelled"]

_log = logging.getLogger("aiotp.sessions")
_T = TypeVar("_T")


def check_cancelled() -> None:
    """Raise the cancellation a call may have swallowed. On Python 3.11, `asyncio.wait_for`
    (which redis-py uses) returns the result when a cancellation lands as the reply arrives, and
    the cancellation is lost; a loop that must stop when cancelled (the sweeper at shutdown)
    checks here after each call."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisWholeStore:
    """See the module docstring."""

    name: str
    timeout: float
    max_sessions: int
    sweep_chunk: int
    sweep_interval: float
    _p: str
    _subs: _Registry
    _listener: Listener | None
    _client: Any
    _client_loop: asyncio.AbstractEventLoop | None
    _sweeper: asyncio.Task[None] | None
    _ends_task: asyncio.Task[None] | None
    _down_logged: bool
    _slots: asyncio.Semaphore

    if TYPE_CHECKING:  # provided by the store; no stub may shadow them

        def _redis(self) -> Any: ...
        def _unavailable(self, op: str, exc: BaseException) -> SessionStoreUnavailable: ...
        async def _eval(self, name: str, op: str, key: str, *args: Any) -> list[Any]: ...
        def _removed(self, claimed: list[Any]) -> None: ...

    async def _command(self, op: str, call: Callable[[Any], Awaitable[_T]]) -> _T:
        """``call(client)`` (plain commands, no script) within the store's deadline and one of
        its ``max_connections`` slots, as every script call (`_eval`): the pool never holds
        more connections than that, and a burst waits for a slot instead of failing."""
        client = self._redis()
        try:
            async with asyncio.timeout(self.timeout), self._slots:
                return await call(client)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(op, exc) from exc

    async def count(self) -> int:
        """Sessions held, expired or not yet swept included: what the quota counts."""
        n: int = await self._command("count", lambda c: c.zcard(self._p + "exp"))
        return n

    async def count_by_state(self) -> dict[str, int]:
        """How many live sessions are in each lifecycle state (the gauge of the ops snapshot
        and of the metrics exporter): the live ids, then their states, `sweep_chunk` to a
        round trip. Not one atomic step: a session ending meanwhile is left out."""
        counts: dict[str, int] = {}
        ids = await self.ids()
        for at in range(0, len(ids), self.sweep_chunk):
            chunk = ids[at : at + self.sweep_chunk]

            async def states(client: Any, chunk: list[str] = chunk) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for sid in chunk:
                    pipe.hget(self._p + "s:" + sid, "st")
                replies: list[Any] = await pipe.execute()
                return replies

            for state in await self._command("count_by_state", states):
                if state is not None:  # ended since ids() listed it
                    name = state.decode(errors="replace")
                    counts[name] = counts.get(name, 0) + 1
        return counts

    async def ids(self) -> list[str]:
        """The ids of the live sessions."""
        reply = await self._eval("IDS", "ids", self._p + "exp")
        return [raw.decode() for raw in reply]

    async def sweep(self) -> int:
        """Remove expired (and heartbeat-abandoned) sessions now, `sweep_chunk` per script;
        returns how many this instance removed (it runs their hooks)."""
        removed = 0
        while True:
            reply = await self._eval("SWEEP", "sweep", self._p + "exp", self.sweep_chunk)
            claimed, seen = reply[0], int(reply[1])
            removed += len(claimed)
            self._removed(claimed)
            if seen < self.sweep_chunk:  # a full chunk: more may be due (re-filed ones moved on)
                break
            check_cancelled()
            await asyncio.sleep(0)
        with contextlib.suppress(SessionStoreUnavailable):
            await self._command("sweep", lambda c: c.hincrby(self._p + "stats", "cleanup_runs", 1))
        return removed

    sweep_async = sweep  # the in-memory store's name for its yielding sweep

    async def stats(self) -> StoreStats:
        """The totals of every instance sharing the store; ``memory`` is the server's
        ``used_memory`` (all of it), ``subscribers`` this instance's subscriptions."""

        async def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(self._p + "stats")
            pipe.zcard(self._p + "exp")
            pipe.info("memory")
            replies: list[Any] = await pipe.execute()
            return replies

        counters, held, memory = await self._command("stats", read)
        c = {k.decode(): int(v) for k, v in counters.items()}
        return StoreStats(
            current_sessions=held,
            sessions_created=c.get("created", 0),
            sessions_deleted=c.get("deleted", 0),
            sessions_expired=c.get("expired", 0),
            sessions_gc=c.get("gc", 0),
            cleanup_runs=c.get("cleanup_runs", 0),
            max_sessions=self.max_sessions,
            memory=int(memory.get("used_memory", 0)),
            subscribers=self._subs.count(),
        )

    async def ping(self) -> None:
        """`SessionStoreUnavailable` unless the server answers within ``timeout``."""
        await self._command("ping", lambda c: c.ping())

    # -- background sweeps (run by the runtime: aiotp.session_store.runtime_store) -------------
    async def sweep_forever(
        self, sleep: Callable[[float], Awaitable[object]] | None = None
    ) -> None:
        """Sweep every `sweep_interval` s until cancelled. A sweep that cannot reach the server
        logs one WARNING per outage; one that fails otherwise is logged and does not end it.
        ``sleep`` waits between sweeps (default `asyncio.sleep`; the runtime passes its
        virtual clock's)."""
        while True:
            await (sleep or asyncio.sleep)(self.sweep_interval)
            try:
                await self.sweep()
            except SessionStoreUnavailable as exc:
                if not self._down_logged:
                    self._down_logged = True
                    _log.warning("session sweep skipped: %s", exc)
                continue
            except Exception:
                _log.exception("session sweep failed")
            check_cancelled()
            if self._down_logged:
                self._down_logged = False
                _log.warning("session store %s is reachable again; sweeps resumed", self.name)

    def start(self) -> None:
        """Start background sweeps every `sweep_interval` s (needs a running loop)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self.sweep_forever())

    async def stop(self) -> None:
        """Stop background sweeps and the event listener, and close the connections (the next
        operation opens them again)."""
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ends, self._ends_task = self._ends_task, None
        if ends is not None and not ends.done():
            ends.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ends
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                # The pool too: a client made on a pool of its own leaves it open otherwise,
                # every connection it holds with it, until the garbage collector finds it.
                await client.aclose(close_connection_pool=True)
        self._client_loop = None

    aclose = stop

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
