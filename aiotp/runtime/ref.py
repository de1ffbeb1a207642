"""Actor references: the handle users hold, and the mailbox behind it.

An `ActorRef` is how you talk to an actor: `call` (request/reply, default timeout 5 s as
GenServer), `cast` (fire and forget, handled by `handle_cast`), `send` (a raw message for
`handle_info`). A ref stays valid after the actor died: calls then raise `NoProc` at once and casts
are dropped, as in OTP, so holding a ref never keeps a dead actor's state alive.

The mailbox lives in the ref itself rather than in an `asyncio.Queue`: a list that the actor swaps
out whole (one batch per wake-up) and a single waiter future. That is what keeps an idle actor
under 2 KiB (an `asyncio.Queue` alone costs 3.4 KiB) and a cast close to a bare queue put.
Messages from one sender are handled in the order they were sent (one FIFO for all senders).

A bounded mailbox (``max_mailbox=``) makes `cast`, `call` and `send` raise `MailboxFull` rather
than grow without limit; signals from the runtime (exits, monitors, stop requests) always get in.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
from collections.abc import Awaitable, Generator
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final

from aiotp.runtime.call_timing import SAMPLE_MASK as _SAMPLE_MASK
from aiotp.runtime.call_timing import timings as _timings
from aiotp.runtime.errors import AiotpError, CallTimeout, MailboxFull, NoProc

if TYPE_CHECKING:
    from aiotp.runtime.actor import Actor
    from aiotp.runtime.clock import TimerHandle
    from aiotp.runtime.runtime import Runtime

__all__ = ["ActorRef", "Caller", "MonitorRef", "Timer", "current_actor"]

# Message kinds, the first element of every mailbox item.
CAST: Final = 0
CALL: Final = 1
INFO: Final = 2
STOP: Final = 3

_current: contextvars.ContextVar[ActorRef | None] = contextvars.ContextVar(
    "aiotp_current_actor", default=None
)
_monitor_ids = itertools.count(1)


def current_actor() -> ActorRef | None:
    """The ref of the actor whose task is running this code, or None outside actors."""
    return _current.get()


class Phase(IntEnum):
    """Lifecycle of an actor: STARTING -> RUNNING -> STOPPING -> DEAD (no way back)."""

    STARTING = 0
    RUNNING = 1
    STOPPING = 2
    DEAD = 3


class MonitorRef:
    """Identifies one monitor; `Down.monitor` carries it so several monitors can be told apart."""

    __slots__ = ("id", "target", "watcher")

    def __init__(self, watcher: ActorRef, target: ActorRef) -> None:
        self.id = next(_monitor_ids)
        self.watcher = watcher
        self.target = target

    def __repr__(self) -> str:
        return f"<MonitorRef #{self.id} {self.watcher!r} -> {self.target!r}>"


class Timer:
    """A pending `send_after`; `cancel()` returns False once the message was already sent."""

    __slots__ = ("_handle", "_owner", "fired")

    def __init__(self, owner: ActorRef) -> None:
        self._owner = owner
        self._handle: TimerHandle | None = None  # the loop's, or a VirtualClock's
        self.fired = False

    def cancel(self) -> bool:
        if self.fired or self._handle is None or self._handle.cancelled():
            return False
        self._handle.cancel()
        timers = self._owner._timers
        if timers is not None:
            timers.discard(self)
        return True

    def _fire(self, msg: Any) -> None:
        self.fired = True
        owner = self._owner
        if owner._timers is not None:
            owner._timers.discard(self)
        owner._put((INFO, msg), force=True)


class Caller:
    """The other end of a `call`: pass it around and `reply` once, now or later (NOREPLY).

    A reply after the caller timed out, was cancelled, or already got an answer is dropped:
    `reply` then returns False. If the actor dies holding a deferred caller, the caller gets
    `ActorExited` at once.
    """

    __slots__ = ("_callee", "_fut", "sender")

    def __init__(self, fut: asyncio.Future[Any], callee: ActorRef, sender: ActorRef | None) -> None:
        self._fut = fut
        self._callee = callee
        self.sender = sender

    @property
    def done(self) -> bool:
        return self._fut.done()

    def reply(self, value: Any) -> bool:
        return self._settle(value, None)

    def fail(self, exc: BaseException) -> bool:
        """Answer with an exception instead of a value (the caller's `call` raises it)."""
        return self._settle(None, exc)

    def _settle(self, value: Any, exc: BaseException | None) -> bool:
        deferred = self._callee._deferred
        if deferred is not None:
            deferred.discard(self)
        fut = self._fut
        if fut.done():
            return False
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)
        return True


def _expire(fut: asyncio.Future[Any], target: ActorRef, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(CallTimeout(f"call to {target!r} got no reply within {timeout} s"))


class _Done:
    """An awaitable that is already done: what `cast` returns (no future, no coroutine)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that returns at once


DONE = _Done()


class ActorRef:
    """Handle to an actor. Hashable, comparable by identity, safe to keep after the actor died."""

    __slots__ = (
        "__weakref__",
        "_actor",
        "_batch",
        "_current_caller",
        "_deferred",
        "_exit_signal",
        "_inbox",
        "_kind",
        "_links",
        "_loop",
        "_max_mailbox",
        "_monitored_by",
        "_monitoring",
        "_parent",
        "_phase",
        "_pos",
        "_reason",
        "_rt",
        "_started",
        "_stop_reason",
        "_task",
        "_timers",
        "_waiter",
        "id",
        "name",
    )

    def __init__(
        self, rt: Runtime, ident: int, name: Any, max_mailbox: int | None, parent: ActorRef | None
    ) -> None:
        self._rt = rt
        self._loop = rt._loop
        self.id = ident
        self.name = name
        self._max_mailbox = max_mailbox
        self._parent = parent
        self._actor: Actor | None = None
        self._kind: type | None = None  # the actor's class, kept after it exited (for repr)
        # When it was spawned, on the loop's clock: its uptime in `aiotp.ops.snapshot`. A float
        # shared with nothing else costs 32 bytes per actor; the loop's time is read, not the
        # system's, because uvloop caches it per iteration.
        self._started: float = self._loop.time()
        self._inbox: list[tuple[Any, ...]] = []
        self._batch: list[tuple[Any, ...]] | None = None
        self._pos = 0
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._phase = Phase.STARTING
        self._reason: Any = None
        self._stop_reason: Any = None
        self._exit_signal: tuple[Any, bool] | None = None
        self._current_caller: Caller | None = None
        # Created on first use: most actors never link, monitor or defer, and an empty set is
        # 216 bytes, a tenth of our per-actor budget.
        self._links: set[ActorRef] | None = None
        self._monitored_by: dict[int, MonitorRef] | None = None
        self._monitoring: dict[int, MonitorRef] | None = None
        self._deferred: set[Caller] | None = None
        self._timers: set[Timer] | None = None

    # -- introspection -------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._phase is not Phase.DEAD

    @property
    def started_at(self) -> float:
        """When the actor was spawned, on its loop's clock (``loop.time()``)."""
        return self._started

    @property
    def phase(self) -> Phase:
        """Where the actor is in its lifecycle (STARTING, RUNNING, STOPPING, DEAD)."""
        return self._phase

    @property
    def parent(self) -> ActorRef | None:
        """The actor that spawned this one with ``link=True`` (its owner), or None."""
        return self._parent

    @property
    def actor_class(self) -> type | None:
        """The actor's class (kept after it exited)."""
        return self._kind

    @property
    def exit_reason(self) -> Any:
        """Why the actor exited (None while it is alive)."""
        return self._reason

    def mailbox_size(self) -> int:
        pending = len(self._inbox)
        if self._batch is not None:
            pending += len(self._batch) - self._pos
        return pending

    def __repr__(self) -> str:
        label = f"{self.name!r}" if self.name is not None else f"#{self.id}"
        kind = f"{self._kind.__name__} " if self._kind is not None else ""
        return f"<ActorRef {kind}{label} {self._phase.name} mailbox={self.mailbox_size()}>"

    # -- messaging -----------------------------------------------------------------------
    def _put(self, item: tuple[Any, ...], force: bool = False) -> bool:
        """Queue an item; False if the actor is dead (the item is dropped, as OTP drops it)."""
        if self._phase is Phase.DEAD:
            return False
        if not force and self._max_mailbox is not None and self.mailbox_size() >= self._max_mailbox:
            raise MailboxFull(f"mailbox of {self!r} is full ({self._max_mailbox} messages)")
        self._inbox.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return True

    async def call(self, msg: Any, timeout: float | None = 5.0) -> Any:
        """Send a request and wait for the reply of `handle_call`.

        Raises `NoProc` at once if the actor is dead, `CallTimeout` after `timeout` seconds
        (None waits forever), `ActorExited` if the actor dies before replying, and the exception
        `handle_call` raised if it raised one (the actor then crashes, OTP style).
        """
        if self._phase is Phase.DEAD:
            raise NoProc(f"call to {self!r}: the actor is not alive")
        sender = _current.get()
        if sender is self:
            raise AiotpError(f"{self!r} called itself: that would wait forever")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"call timeout must be positive or None, got {timeout!r}")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._put((CALL, msg, Caller(fut, self, sender)))
        # Empty unless a metrics exporter asked for call latencies (see call_timing.py).
        timing = _timings.get(self._rt) if _timings else None
        if timing is not None:
            # One call in SAMPLE_EVERY is timed (call_timing.py): the histogram is a sample.
            timing.tick += 1
            if timing.tick & _SAMPLE_MASK:
                timing = None
        if timing is None:
            if timeout is None:
                return await fut
            handle = self._loop.call_later(timeout, _expire, fut, self, timeout)
            try:
                return await fut
            finally:
                handle.cancel()
        # The same wait, timed (kept apart so that the untimed path stays as it was).
        started = time.perf_counter()
        try:
            if timeout is None:
                return await fut
            handle = self._loop.call_later(timeout, _expire, fut, self, timeout)
            try:
                return await fut
            finally:
                handle.cancel()
        finally:
            timing.record(self._kind, time.perf_counter() - started)

    def cast(self, msg: Any) -> Awaitable[None]:
        """Queue `msg` for `handle_cast`; dropped silently if the actor is dead (as in OTP).

        Queued at once, when called: ``await ref.cast(msg)`` works, and so does a forgotten
        ``await`` (a coroutine would have dropped the message without a word)."""
        self._put((CAST, msg))
        return DONE

    def cast_nowait(self, msg: Any) -> None:
        """`cast` for code that is not a coroutine (callbacks, other threads' loop callbacks)."""
        self._put((CAST, msg))

    def send(self, msg: Any) -> None:
        """Queue a raw message for `handle_info`; dropped silently if the actor is dead."""
        self._put((INFO, msg))
