"""Session events: watch one session's life from the event loop, whatever thread changes it.

A client waiting on a long-running session (a job that may stop to ask for input) would
otherwise poll `peek`. `SessionStore.subscribe` instead hands it the session's changes as they
happen, and tells it when the session is gone::

    async with store.subscribe("job-1") as events:   # SessionNotFound at once if absent
        async for ev in events:
            if ev.kind == "state" and ev.data["to"] == "input_required":
                ...
    # leaving the block (or breaking out of the loop) unsubscribes

Kinds of `SessionEvent` (``session_id``, ``kind``, ``data``, ``at`` on the store's clock):

- ``"state"``: `transition`; data ``{"from": old, "to": new}``.
- ``"heartbeat"``: `heartbeat`; data ``{}``.
- ``"published"``: `publish(session_id, data)`; data is the publisher's object, the same one for
  every subscriber: treat it as read-only.
- ``"lagged"``: this subscriber fell behind and lost the oldest events; data ``{"dropped": n}``,
  delivered right before the first event after the gap.
- ``"end"``: the session was removed; data ``{"reason": "expired" | "deleted" | "gc"}``. It is
  the last event: iteration stops after it. Exactly one per session and subscriber, never
  dropped, whichever of a sweep, an access, a `delete` or a heartbeat GC removed the session.

Guarantees and defaults:
- Fan-out: any number of subscribers per session; each has its own bounded queue.
- Events of one session reach every subscriber in the order the changes were committed: they
  are queued under the session's shard lock, in the same critical section as the change.
- Producing an event never blocks and never raises into the producer (a thread calling
  `transition`, a sweep): it appends to the subscriber's queue and, only if the subscriber is
  waiting, wakes it with ``loop.call_soon_threadsafe``. A subscriber whose loop is closed is
  dropped silently.
- ``max_queue=100`` events per subscriber: enough for bursts of state changes and progress
  reports, small enough that a forgotten subscriber holds little. When a slow subscriber's
  queue is full, ``overflow`` says what happens:
  ``"drop_oldest"`` (default: a watcher usually wants the latest state, not a full history)
  drops the oldest queued event and reports the gap with one ``"lagged"`` event;
  ``"close"`` ends the subscription: the next read raises `SubscriberLagged` (for a consumer
  that must see every event, or know it did not).
- Leaving early unsubscribes: ``break`` (the subscription is released when dropped), a
  cancelled wait, `aclose`, or leaving ``async with``. Nothing is left in the store.
- A subscription is read by one task at a time, on one loop.

Not a message queue: events are not persisted, and a subscriber sees only what happens after it
subscribed (read the current state with `peek`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

import attrs

from aiotp.session_store.errors import SubscriberLagged
from aiotp.session_store.session import Session

__all__ = ["OVERFLOW_POLICIES", "Events", "SessionEvent", "Subscription"]

OVERFLOW_POLICIES = ("drop_oldest", "close")


@attrs.frozen
class SessionEvent:
    """One change to a session (see the module docstring for the kinds)."""

    session_id: str
    kind: str
    data: Any
    at: float


class _Phase(enum.Enum):
    OPEN = "OPEN"  # events are queued
    ENDED = "ENDED"  # "end" is queued: nothing more will be
    LAGGED = "LAGGED"  # overflow="close" overflowed: the next read raises SubscriberLagged
    CLOSED = "CLOSED"  # the reader left


class _Subscriber:
    """The producer-facing half of a subscription: its queue. The registry holds this, never
    the `Subscription`, so that dropping the `Subscription` can release it."""

    __slots__ = (
        "_dropped",
        "_lock",
        "_loop",
        "_queue",
        "_waiter",
        "max_queue",
        "overflow",
        "phase",
        "session_id",
    )

    def __init__(self, session_id: str, max_queue: int, overflow: str) -> None:
        self.session_id = session_id
        self.max_queue = max_queue
        self.overflow = overflow
        self.phase = _Phase.OPEN
        self._lock = threading.Lock()
        self._queue: deque[SessionEvent] = deque()
        self._dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, event: SessionEvent) -> bool:
        """Queue `event` (from any thread); False once this subscriber wants no more events.

        Never blocks on the reader and never raises: the producer is a store operation.
        """
        with self._lock:
            if self.phase is not _Phase.OPEN:
                return False
            loop = self._loop
            if loop is not None and loop.is_closed():
                self._shut(_Phase.CLOSED)
                return False
            queue = self._queue
            if event.kind == "end":
                queue.append(event)  # never dropped: it may exceed max_queue by one
                self.phase = _Phase.ENDED
            elif len(queue) < self.max_queue:
                queue.append(event)
            elif self.overflow == "close":
                self._shut(_Phase.LAGGED)
            else:
                queue.popleft()
                self._dropped += 1
                queue.append(event)
            # Wake the reader only if it waits, and once per wait: a slow reader costs the loop
            # one callback, not one per event, so the queue's bound is the only memory it holds.
            waiter, self._waiter = self._waiter, None
            keep = self.phase is _Phase.OPEN
        if waiter is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(_wake, waiter)
            except Exception:  # the loop closed meanwhile: nobody is left to read
                self.phase = _Phase.CLOSED
                return False
        return keep

    def _shut(self, phase: _Phase) -> None:
        self.phase = phase
        self._queue.clear()
        self._dropped = 0

    def close(self) -> None:
        """The reader left (from any thread): drop what is queued, end a pending read."""
        with self._lock:
            self._shut(_Phase.CLOSED)
            waiter, self._waiter = self._waiter, None
            loop = self._loop
        if waiter is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                loop.call_soon_threadsafe(_wake, waiter)

    def _take(self) -> SessionEvent | None:
        """The next event, None if none is queued yet; StopAsyncIteration or SubscriberLagged
        when the subscription is over. Call under `_lock`."""
        queue = self._queue
        if self.phase is _Phase.CLOSED:
            raise StopAsyncIteration
        if self._dropped:
            n, self._dropped = self._dropped, 0
            at = queue[0].at if queue else 0.0
            return SessionEvent(self.session_id, "lagged", {"dropped": n}, at)
        if queue:
            return queue.popleft()
        if self.phase is _Phase.LAGGED:
            raise SubscriberLagged(self.session_id, self.max_queue)
        if self.phase is _Phase.ENDED:
            raise StopAsyncIteration
        return None

    def take_nowait(self) -> SessionEvent | None:
        with self._lock:
            return self._take()

    async def next(self) -> SessionEvent:
        while True:
            with self._lock:
                event = self._take()
                if event is not None:
                    return event
                if self._waiter is not None:
                    raise RuntimeError(
                        f"subscription to session {self.session_id!r} is already being read "
                        "by another task"
                    )
                loop = self._loop = asyncio.get_running_loop()
                waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                with self._lock:
                    if self._waiter is waiter:
                        self._waiter = None

    def __repr__(self) -> str:
        return f"<subscriber of {self.session_id!r} {self.phase.value} queued={len(self._queue)}>"


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Registry:
    """Subscribers by session id. Copy-on-write tuples: emitters read without a lock (they
    hold the session's shard lock, which orders them); changes take `_lock`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_session: dict[str, tuple[_Subscriber, ...]] = {}

    def add(self, sub: _Subscriber) -> None:
        with self._lock:
            sid = sub.session_id
            live = tuple(s for s in self.by_session.get(sid, ()) if s.phase is _Phase.OPEN)
            self.by_session[sid] = (*live, sub)

    def discard(self, sub: _Subscriber, *, blocking: bool = True) -> None:
        sub.phase = _Phase.CLOSED  # a plain store: safe without any lock, and offer() honours it
        # The finalizer of a dropped Subscription may run inside a garbage collection that
        # started while this very thread held `_lock`: it must not wait for it. It then
        # leaves the closed subscriber for the session's next event (or its end) to purge.
        if not self._lock.acquire(blocking=blocking):
            return
        try:
            self._purge(sub.session_id)
        finally:
            self._lock.release()

    def _purge(self, sid: str) -> None:
        subs = self.by_session.get(sid)
        if subs is None:
            return
        live = tuple(s for s in subs if s.phase is _Phase.OPEN)
        if live:
            self.by_session[sid] = live
        else:
            del self.by_session[sid]

    def emit(self, event: SessionEvent) -> None:
        subs = self.by_session.get(event.session_id)
        if subs is None:
            return
        if not all([s.offer(event) for s in subs]):  # a list: offer to every one
            with self._lock:
                self._purge(event.session_id)

    def end(self, event: SessionEvent) -> None:
        with self._lock:
            subs = self.by_session.pop(event.session_id, ())
        for s in subs:
            s.offer(event)

    def count(self) -> int:
        subs = [s for group in list(self.by_session.values()) for s in group]
        return sum(1 for s in subs if s.phase is not _Phase.CLOSED)


class Subscription:
    """An async iterator (and async context manager) of one session's `SessionEvent`s."""

    def __init__(self, registry: _Registry, sub: _Subscriber) -> None:
        self._registry = registry
        self._sub = sub
        self._over = False
        # Dropping the subscription (a `break` out of ``async for store.subscribe(...)``)
        # unsubscribes: the registry holds only `sub`, so nothing keeps `self` alive.
        self._finalizer = weakref.finalize(self, registry.discard, sub, blocking=False)
        self._finalizer.atexit = False

    @property
    def session_id(self) -> str:
        return self._sub.session_id

    def __aiter__(self) -> Self:
        return self

    @property
    def closed(self) -> bool:
        """True once the subscription is over: its end read, closed, or lagged out."""
        s = self._sub
        return self._over or s.phase is _Phase.LAGGED or (s.phase is _Phase.ENDED and not s._queue)

    async def __anext__(self) -> SessionEvent:
        try:
            return await self._sub.next()
        except (StopAsyncIteration, SubscriberLagged):  # the end of this subscription
            self.close()
            raise
        # A cancelled wait takes no event and leaves the subscription as it was, so that
        # ``asyncio.wait_for(anext(sub), t)`` can time out and read on (a WebSocket's ping
        # loop); a second task's read is refused without harming the first.

    def get_nowait(self) -> SessionEvent:
        """The next queued event without waiting (any thread); `asyncio.QueueEmpty` if none is
        queued (check `closed` to tell "not yet" from "never"); `SubscriberLagged` as a read."""
        try:
            event = self._sub.take_nowait()
        except SubscriberLagged:
            self.close()
            raise
        except StopAsyncIteration:
            self.close()
            raise asyncio.QueueEmpty from None
        if event is None:
            raise asyncio.QueueEmpty
        return event

    def close(self) -> None:
        """Unsubscribe now (idempotent); a pending or later read stops iteration."""
        self._over = True
        if self._finalizer.detach() is not None:
            self._sub.close()
            self._registry.discard(self._sub)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self._sub
        return f"<Subscription {s.session_id!r} {s.phase.value} queued={len(s._queue)}>"


_Change = Callable[[Session, float], Session]


class Events:
    """The events half of `SessionStore` (a mixin: the store owns `_live` and the locks)."""

    _subs: _Registry

    if TYPE_CHECKING:  # provided by the store; no stub may shadow it

        def _live(self, session_id: str, change: _Change | None) -> Session: ...

    def subscribe(
        self, session_id: str, *, max_queue: int = 100, overflow: str = "drop_oldest"
    ) -> Subscription:
        """Events of the live session `session_id` from now on; `SessionNotFound` at once if
        there is none. See the module docstring for kinds, ordering and overflow."""
        if not isinstance(max_queue, int) or isinstance(max_queue, bool) or max_queue < 1:
            raise ValueError(f"max_queue must be an int >= 1, got {max_queue!r}")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        sub = _Subscriber(session_id, max_queue, overflow)
        with contextlib.suppress(RuntimeError):  # no loop yet: bound when it first waits
            sub._loop = asyncio.get_running_loop()  # so that a closed loop is noticed at once

        def register(stored: Session, now: float) -> Session:
            # Under the shard lock: a removal of this session either comes before (we raise
            # SessionNotFound) or after (it finds us and sends "end"); never in between.
            self._subs.add(sub)
            return stored

        self._live(session_id, register)
        return Subscription(self._subs, sub)

    def publish(self, session_id: str, data: Any) -> None:
        """Send ``data`` to the session's subscribers as a ``"published"`` event.

        `SessionNotFound` if the session is absent or expired. Does not touch the session:
        publishing progress is not a client's access (send a `heartbeat` to keep it alive).
        """

        def send(stored: Session, now: float) -> Session:
            self._emit(session_id, "published", data, now)
            return stored

        self._live(session_id, send)

    def _emit(self, session_id: str, kind: str, data: Any, now: float) -> None:
        """Queue an event; call under the session's shard lock (that is what orders them)."""
        if self._subs.by_session:
            self._subs.emit(SessionEvent(session_id, kind, data, now))

    def _ended(self, session_id: str, reason: str, now: float) -> None:
        """The session was just removed: call under its shard lock, right where it is removed.

        Not from a removal hook: hooks run after the lock is released, when the same id may
        already hold a new session, whose subscribers must not get the old one's end.
        """
        if self._subs.by_session:
            self._subs.end(SessionEvent(session_id, "end", {"reason": reason}, now))
