"""Session events of a `RedisSessionStore`: Redis pub/sub under the in-memory store's subscriptions.

Each change that emits an event (`transition`, `heartbeat`, `publish`, a removal) publishes it
from inside its own Lua script, on the channel ``{prefix}:ev:<id>``, so every instance's
subscribers see one session's events in the order the changes were committed. Here, one
`Listener` per store holds one pub/sub connection, follows the channels of the sessions this
instance's subscribers watch, and hands each message to the same `_Registry` and `Subscription`
the in-memory store uses (queues, overflow, ``lagged``, ``end``: see `aiotp.session_store.events`).

Decisions:
- `subscribe` waits for the server's confirmation of the channel *before* it checks that the
  session is live: a removal after the check is then sure to reach the subscriber as ``"end"``.
- A channel is left once no subscriber of this instance watches it, or once its session ended
  (checked every ``IDLE`` = 0.5 s by the listener, which also notices subscriptions dropped by
  the GC): a server keeps every channel a connection follows, so ended sessions' channels would
  pile up otherwise.
- `RedisSessionStore.stop` ends every open subscription with an ``"end"`` event of reason
  ``"shutdown"``: with the listener gone no event can reach them, and a reader must not wait
  forever for an end nobody will deliver (a runtime's shutdown stops its store).
- Pub/sub does not keep messages: while the listener's connection is down, events are lost. When
  it is back, every subscriber gets one ``"lagged"`` event with ``{"dropped": None}`` (an unknown
  number), and a subscriber whose session ended meanwhile gets its ``"end"`` with reason
  ``"unknown"``: it never waits for an end that was sent while nobody listened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import TYPE_CHECKING, Any

import msgpack
from redis.exceptions import RedisError

from aiotp.session_store.events import SessionEvent, Subscription, _Phase, _Registry
from aiotp.session_store.redis_sweeping import check_cancelled

if TYPE_CHECKING:
    from aiotp.session_store.redis_store import RedisSessionStore


__all__ = ["IDLE", "Listener", "PendingSubscription"]

_log = logging.getLogger("aiotp.sessions")
IDLE = 0.5  # seconds a listener waits for a message before it tidies its channels


class PendingSubscription:
    """What `RedisSessionStore.subscribe` returns: ``await`` it for the `Subscription`, or use
    it as ``async with`` (unsubscribes on the way out) or ``async for``."""

    def __init__(self, coro: Coroutine[Any, Any, Subscription]) -> None:
        self._coro = coro
        self._sub: Subscription | None = None

    def __await__(self) -> Generator[Any, None, Subscription]:
        return self._coro.__await__()

    async def __aenter__(self) -> Subscription:
        self._sub = await self._coro
        return self._sub

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            self._sub.close()

    def __aiter__(self) -> AsyncIterator[SessionEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[SessionEvent]:
        sub = await self._coro
        try:
            async for event in sub:
                yield event
        finally:
            sub.close()


class Listener:
    """One pub/sub connection of a store and the task that reads it (see the module docstring)."""

    def __init__(self, store: RedisSessionStore, registry: _Registry) -> None:
        self.store = store
        self.registry = registry
        self.loop = asyncio.get_running_loop()
        self.pubsub = store._redis().pubsub()
        self.prefix = (store._p + "ev:").encode()
        self.ended_channel = (store._p + "ended").encode()
        self.on_ended: Any = None  # (session_id, born) -> None, while someone follows ends
        self.followed: set[str] = set()
        self.ended: set[str] = set()  # sessions that ended: their channels to leave
        self.confirm: dict[bytes, asyncio.Future[None]] = {}
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def usable(self) -> bool:
        return not self.closed and self.loop is asyncio.get_running_loop()

    async def follow(self, sid: str) -> None:
        """Subscribe to the session's channel; returns once the server confirmed it."""
        self.ended.discard(sid)  # a new session of that id: its channel stays
        if sid in self.followed:
            return
        channel = self.prefix + sid.encode()
        waiter = self.confirm.get(channel)
        if waiter is None:
            waiter = self.confirm[channel] = self.loop.create_future()
        try:
            async with asyncio.timeout(self.store.timeout):
                await self.pubsub.subscribe(channel)
                if self.task is None:
                    self.task = self.loop.create_task(self._run(), name="aiotp session events")
                await asyncio.shield(waiter)
        except (RedisError, OSError, TimeoutError) as exc:
            self.confirm.pop(channel, None)
            raise self.store._unavailable(f"subscribe {sid!r}", exc) from exc
        self.followed.add(sid)

    async def follow_ends(self, callback: Any) -> None:
        """Every session ended on any instance, to `callback(session_id, born)` (see
        `RedisSharing.on_ended`); returns once the server confirmed the subscription."""
        self.on_ended = callback
        waiter = self.confirm.get(self.ended_channel)
        if waiter is None:
            waiter = self.confirm[self.ended_channel] = self.loop.create_future()
        try:
            async with asyncio.timeout(self.store.timeout):
                await self.pubsub.subscribe(self.ended_channel)
                if self.task is None:
                    self.task = self.loop.create_task(self._run(), name="aiotp session events")
                await asyncio.shield(waiter)
        except (RedisError, OSError, TimeoutError) as exc:
            self.confirm.pop(self.ended_channel, None)
            raise self.store._unavailable("follow ended sessions", exc) from exc

    async def _run(self) -> None:
        gap = False
        while True:
            await self._tidy()
            try:
                message = await self.pubsub.get_message(timeout=IDLE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection broke: events are being lost
                check_cancelled()
                if not gap:
                    _log.warning("session events of %s interrupted: %s", self.store.name, exc)
                gap = True
                await asyncio.sleep(IDLE)
                continue
            if gap and self.pubsub.connection is not None and self.pubsub.connection.is_connected:
                gap = False
                await self._after_gap()
            if message is not None:
                self._dispatch(message)
            check_cancelled()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel") or b""
        if kind == "subscribe":
            waiter = self.confirm.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        if kind == "message" and channel == self.ended_channel:
            self._ended(message["data"])
            return
        if kind != "message" or not channel.startswith(self.prefix):
            return
        sid = channel[len(self.prefix) :].decode(errors="replace")
        try:
            at, what, *rest = msgpack.unpackb(message["data"], raw=True)
            event = _event(sid, float(at), what.decode(), rest)
        except Exception:  # not ours (someone published on our channel): ignore it
            _log.debug("ignored a foreign message on %r", channel, exc_info=True)
            return
        if event.kind == "end":
            self.registry.end(event)
            self.followed.discard(sid)
            self.ended.add(sid)
        else:
            self.registry.emit(event)

    def _ended(self, data: bytes) -> None:
        callback = self.on_ended
        if callback is None:
            return
        try:
            raw_id, born = msgpack.unpackb(data, raw=True)
            sid = raw_id.decode(errors="replace")
            when = float(born) if born not in (False, None, b"") else None
        except Exception:  # not ours: ignore it
            _log.debug("ignored a foreign message on %r", self.ended_channel, exc_info=True)
            return
        try:
            callback(sid, when)
        except Exception:
            _log.warning("an ended-session callback failed", exc_info=True)

    async def _tidy(self) -> None:
        """Leave the channels no subscriber of ours watches any more, and those of ended
        sessions (unless followed again since)."""
        idle = [sid for sid in self.followed if sid not in self.registry.by_session]
        for sid in idle:
            self.followed.discard(sid)
        idle += [sid for sid in self.ended if sid not in self.followed]
        self.ended.clear()
        if idle:
            with contextlib.suppress(RedisError, OSError):
                await self.pubsub.unsubscribe(*(self.prefix + sid.encode() for sid in idle))

    async def _after_gap(self) -> None:
        """Back after an outage: say events were lost, and end the sessions that ended."""
        for sid, subs in list(self.registry.by_session.items()):
            now = 0.0
            for s in subs:
                if s.phase is _Phase.OPEN:
                    s.offer(SessionEvent(sid, "lagged", {"dropped": None}, now))
            try:
                alive = await self.store.exists(sid)
            except Exception:
                return  # down again: the next gap tells them
            if not alive:
                self.registry.end(SessionEvent(sid, "end", {"reason": "unknown"}, now))
                self.followed.discard(sid)
                self.ended.add(sid)

    async def close(self) -> None:
        self.closed = True
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiter in self.confirm.values():
            if not waiter.done():
                waiter.cancel()
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        # Nothing reaches the subscriptions any more: end them (see the module docstring).
        at = time.time()
        for sid in list(self.registry.by_session):
            self.registry.end(SessionEvent(sid, "end", {"reason": "shutdown"}, at))


def _event(sid: str, at: float, kind: str, rest: list[Any]) -> SessionEvent:
    if kind == "state":
        return SessionEvent(sid, kind, {"from": rest[0].decode(), "to": rest[1].decode()}, at)
    if kind == "end":
        return SessionEvent(sid, kind, {"reason": rest[0].decode()}, at)
    if kind == "published":
        return SessionEvent(sid, kind, msgpack.unpackb(rest[0], raw=False), at)
    if kind == "heartbeat":
        return SessionEvent(sid, kind, {}, at)
    raise ValueError(f"unknown event kind {kind!r}")
