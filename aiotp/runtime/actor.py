"""The `Actor` base class: subclass it and override the callbacks you need.

An actor is a task with a private mailbox. Its callbacks run one message at a time, so its own
state needs no lock::

    class Counter(aiotp.Actor):
        async def init(self, start: int = 0) -> None:
            self.n = start
        async def handle_call(self, msg, caller):
            return self.n
        async def handle_cast(self, msg) -> None:
            self.n += msg

Callbacks and what the runtime does around them (GenServer's contract):
- `init(*args, **kwargs)` runs inside the actor before its first message; `spawn` returns after it
  and raises whatever it raised.
- `handle_call(msg, caller)` returns the reply, or `aiotp.NOREPLY` to answer later with
  `caller.reply(value)`. An exception reaches the caller and crashes the actor.
- `handle_cast(msg)` / `handle_info(msg)`: an exception crashes the actor. The default
  `handle_call` and `handle_cast` raise `UnhandledMessage` (a message nobody handles is a bug);
  the default `handle_info` logs at debug level and drops the message, because Down, Exit and
  timer messages often arrive at actors that do not care.
- `terminate(reason)` runs when the actor stops: `self.stop`, `rt.stop`, a crash, an exit signal
  it does not trap. It does not run on ``"kill"``, which is immediate by definition.

`self.ref` is the actor's own ref and `self.runtime` the Runtime; both are set before `init`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from aiotp.runtime.errors import AiotpError
from aiotp.runtime.ref import ActorRef, Caller, MonitorRef, Timer

if TYPE_CHECKING:
    from aiotp.runtime.runtime import Runtime

__all__ = ["Actor", "UnhandledMessage"]

_log = logging.getLogger("aiotp.actor")


class UnhandledMessage(AiotpError):
    """An actor got a call or cast that its class does not handle."""


class Actor:
    """Base class of every actor; see the module docstring for the callback contract."""

    #: When True, exit signals from links (except "kill") arrive as `aiotp.Exit` messages in
    #: `handle_info` instead of stopping the actor.
    trap_exit: bool = False

    #: The class of ref `spawn` returns for this actor. A subclass of `ActorRef` (with
    #: ``__slots__ = ()``) gives callers typed helper methods, as `SupervisorRef` does.
    ref_class: ClassVar[type[ActorRef]] = ActorRef

    ref: ActorRef
    runtime: Runtime

    async def init(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            raise TypeError(
                f"{type(self).__name__}.init takes no arguments but got args={args!r} "
                f"kwargs={kwargs!r}; override init to accept them"
            )

    async def handle_call(self, msg: Any, caller: Caller) -> Any:
        raise UnhandledMessage(f"{type(self).__name__} does not handle calls (got {msg!r})")

    async def handle_cast(self, msg: Any) -> None:
        raise UnhandledMessage(f"{type(self).__name__} does not handle casts (got {msg!r})")

    async def handle_info(self, msg: Any) -> None:
        _log.debug("%r dropped unhandled info message %r", self.ref, msg)

    async def terminate(self, reason: Any) -> None:
        return None

    def on_exit(self, reason: Any) -> None:
        """Release what must not outlive the actor; runs on every exit, even after "kill".

        Synchronous and last: after `terminate` (if it ran), before links and monitors hear of
        the death. This is how an actor owning an OS process or a socket behaves like an Erlang
        port owner, whose port closes when it dies however it dies. It also runs when `init`
        failed or was killed, so it must cope with a half-initialised actor. Must not block;
        exceptions are logged.
        """
        return None

    # -- helpers, all acting on this actor --------------------------------------------------
    @property
    def name(self) -> Any:
        return self.ref.name

    def stop(self, reason: Any = "normal") -> None:
        """Stop after the current message (a reply returned by this handle_call is delivered)."""
        self.ref._stop_reason = reason

    def link(self, other: ActorRef) -> None:
        """Link both ways: when either dies abnormally, the other gets the exit signal."""
        self.runtime._signals.link(self.ref, other)

    def unlink(self, other: ActorRef) -> None:
        self.runtime._signals.unlink(self.ref, other)

    def monitor(self, other: ActorRef) -> MonitorRef:
        """Get an `aiotp.Down` message when `other` dies (at once if it is already dead)."""
        return self.runtime._signals.monitor(self.ref, other)

    def demonitor(self, mref: MonitorRef) -> bool:
        return self.runtime._signals.demonitor(mref)

    def send_after(self, seconds: float, msg: Any) -> Timer:
        """Deliver `msg` to our own `handle_info` after `seconds`; cancel with `timer.cancel()`."""
        return self.runtime.send_after(self.ref, seconds, msg)

    def __repr__(self) -> str:
        ref = getattr(self, "ref", None)
        return f"<{type(self).__name__} {ref!r}>"
