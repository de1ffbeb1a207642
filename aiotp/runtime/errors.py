"""Errors of the actor core, each saying whose fault a failure is and what you may now assume."""

from __future__ import annotations

from typing import Any

from aiotp.errors import AiotpError

__all__ = [
    "ActorExited",
    "AiotpError",
    "CallTimeout",
    "MailboxFull",
    "NameTaken",
    "NoProc",
    "RuntimeClosed",
]


class NoProc(AiotpError):
    """The target actor is not alive (dead, never existed, or no actor holds that name).

    Raised at once, never after a timeout. Nothing was delivered.
    """


class CallTimeout(AiotpError, TimeoutError):
    """You stopped waiting for a reply.

    The actor may still be running the request; its late reply is dropped, never delivered to a
    later call. Derives from `TimeoutError` so that generic timeout handling catches it too.
    """


class ActorExited(AiotpError):
    """The actor died before replying; `.reason` is why. The request may or may not have run."""

    def __init__(self, reason: Any, actor: Any = None) -> None:
        super().__init__(f"actor {actor!r} exited before replying: {reason!r}")
        self.reason = reason
        self.actor = actor


class MailboxFull(AiotpError):
    """A bounded mailbox (`max_mailbox=`) is full; the message was not queued."""


class NameTaken(AiotpError):
    """Another live actor already holds this registered name; nothing was spawned."""


class RuntimeClosed(AiotpError):
    """The runtime is stopping or stopped and accepts no new actors or requests."""
