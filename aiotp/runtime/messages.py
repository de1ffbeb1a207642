"""The messages the runtime itself delivers to actors, and the reply sentinel.

- `Down(monitor, actor, reason)`: a monitored actor is gone. `reason` is its exit reason, or
  ``"noproc"`` when it was already dead when the monitor was set.
- `Exit(sender, reason)`: an exit signal, delivered as a message only to an actor with
  ``trap_exit = True``. ``"kill"`` is never delivered this way: it cannot be trapped.
- `NOREPLY`: returned from `handle_call` to answer later through `caller.reply(value)`.

Exit reasons follow OTP: ``"normal"``, ``"shutdown"``, ``("shutdown", term)``, ``"kill"``
(seen by links and monitors as ``"killed"``), or the exception that crashed the actor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from aiotp.runtime.ref import ActorRef, MonitorRef

__all__ = ["NOREPLY", "Down", "Exit", "is_normal_exit"]


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "aiotp.NOREPLY"


NOREPLY: Final = _NoReply()


@attrs.frozen
class Down:
    """A monitored actor went down (`reason` says why; ``"noproc"`` if it was never alive)."""

    monitor: MonitorRef
    actor: ActorRef
    reason: Any


@attrs.frozen
class Exit:
    """An exit signal from a linked actor (or `rt.exit`), seen only by trapping actors."""

    sender: ActorRef | None
    reason: Any


def is_normal_exit(reason: Any) -> bool:
    """True for the reasons OTP treats as a clean end: normal, shutdown, ("shutdown", term)."""
    if reason == "normal" or reason == "shutdown":
        return True
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"
