"""The parts of `RedisSessionStore` that share one session beyond its instance: event
subscriptions over Redis pub/sub (from every instance, see redis_events) and moving a session
between stores (export / import, the format of `aiotp.session_store.portable`).

A mixin of `RedisSessionStore`, kept apart so that the store's module stays about its core
operations; it uses the store's `_change`, `_read` and `_insert`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from aiotp.session_store.errors import SessionNotFound
from aiotp.session_store.events import OVERFLOW_POLICIES, Subscription, _Subscriber
from aiotp.session_store.portable import EXPORT_FORMAT, EXPORT_VERSION, decode_export
from aiotp.session_store.redis_codec import check_id, decode
from aiotp.session_store.redis_events import Listener, PendingSubscription
from aiotp.session_store.session import Session
from aiotp.session_store.snapshot import record_of, session_from

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aiotp.session_store.events import _Registry

__all__ = ["RedisSharing"]

_log = logging.getLogger("aiotp.sessions")


class RedisSharing:
    """Subscriptions, publishing, export and import of a `RedisSessionStore`."""

    if TYPE_CHECKING:
        _subs: _Registry
        _listener: Listener | None
        _ended_callbacks: list[Callable[[str, float | None], None]]
        _ends_task: asyncio.Task[None] | None
        transitions: Mapping[str, Any]
        initial_state: str

        async def _change(self, session_id: str, op: str, *args: Any) -> list[Any]: ...
        async def _read(self, session_id: str, mode: bytes, op: str) -> list[Any]: ...
        async def _insert(self, session: Session, mode: str, age: float, op: str) -> Session: ...

    # -- sessions ended anywhere (for routers: not the once-only removal hooks) -------------
    def on_ended(self, callback: Callable[[str, float | None], None]) -> Callable[[], None]:
        """Call ``callback(session_id, born)`` on this store's loop for every session that
        ends on ANY instance sharing the store (deleted, expired, collected), with the
        ``created_at`` of the incarnation that ended (None if unknown); returns an unhook.

        Removal hooks run once, on the instance that removed the session; a pool on another
        instance that served it still holds its pin and worker state, and this is how it
        learns to drop them. Delivery is at most once per instance (pub/sub): an end missed
        during an outage is caught by the session's next request there (its new incarnation).
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        self._ended_callbacks.append(callback)
        if self._ends_task is None or self._ends_task.done():
            self._ends_task = asyncio.get_running_loop().create_task(self._follow_ends())

        def unhook() -> None:
            if callback in self._ended_callbacks:
                self._ended_callbacks.remove(callback)

        return unhook

    async def _follow_ends(self) -> None:
        try:
            if self._listener is None or not self._listener.usable():
                self._listener = Listener(self, self._subs)  # type: ignore[arg-type]  # a mixin of the store
            await self._listener.follow_ends(self._call_ended)
        except Exception:  # the server is down: the next on_ended (or request) tries again
            _log.debug("could not follow ended sessions", exc_info=True)

    def _call_ended(self, session_id: str, born: float | None) -> None:
        for callback in list(self._ended_callbacks):
            callback(session_id, born)

    # -- events (pub/sub: see redis_events) ---------------------------------------------------
    def subscribe(
        self, session_id: str, *, max_queue: int = 100, overflow: str = "drop_oldest"
    ) -> PendingSubscription:
        """Events of the live session from now on, from every instance. Await it (``sub =
        await store.subscribe(id)``) or enter it (``async with store.subscribe(id) as
        events``); `SessionNotFound` then if there is none."""
        check_id(session_id)
        if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1, got {max_queue!r}")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        return PendingSubscription(self._subscribe(session_id, max_queue, overflow))

    async def _subscribe(self, sid: str, max_queue: int, overflow: str) -> Subscription:
        sub = _Subscriber(sid, max_queue, overflow)
        sub._loop = asyncio.get_running_loop()
        self._subs.add(sub)
        subscription = Subscription(self._subs, sub)
        try:
            if self._listener is None or not self._listener.usable():
                self._listener = Listener(self, self._subs)  # type: ignore[arg-type]  # a mixin of the store
            await self._listener.follow(sid)
            # Subscribed first, then checked: a removal after the check sends us its "end".
            await self._change(sid, "sub")
        except BaseException:
            subscription.close()
            raise
        return subscription

    async def publish(self, session_id: str, data: Any) -> None:
        """Send ``data`` (msgpack types) to the session's subscribers on every instance as a
        ``"published"`` event; does not touch the session."""
        await self._change(session_id, "pub", _pack_any(data))

    # -- moving one session (see aiotp.session_store.portable) ---------------------------------
    async def export(self, session_id: str) -> bytes:
        """The session as bytes for any store's `import_session` (not touched)."""
        reply = await self._read(session_id, b"p", "export")
        now = float(reply[2])
        record = record_of(decode(session_id, reply[1]), now)
        doc = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "session": record}
        data: bytes = msgpack.packb(doc, use_bin_type=True)
        return data

    async def import_session(self, data: bytes, *, replace: bool = False) -> Session:
        """Restore one exported session with the TTL it had left; returns it as stored."""
        record = decode_export(data)
        if record["remaining"] <= 0:
            raise SessionNotFound(
                f"session {record['id']!r} had expired when it was exported; nothing imported"
            )
        session = session_from(record, self.transitions, self.initial_state, 0.0)
        check_id(session.id)
        age = session.ttl - min(session.ttl, float(record["remaining"]))
        return await self._insert(session, "1" if replace else "0", age, "import_session")


def _pack_any(data: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(data, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"published data is not a msgpack type ({exc})") from None
    return packed
