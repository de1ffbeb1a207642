"""Session store errors (all `AiotpError`s)."""

from __future__ import annotations

from aiotp.errors import AiotpError

__all__ = [
    "IllegalTransition",
    "SessionExists",
    "SessionNotFound",
    "SessionQuotaExceeded",
    "SnapshotError",
    "SubscriberLagged",
]


class SessionExists(AiotpError):
    """A live session already has this id; nothing was created."""


class SessionNotFound(AiotpError, KeyError):
    """No live session has this id (it never existed, was deleted, or expired)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "session not found"


class SessionQuotaExceeded(AiotpError):
    """The store holds `max_sessions` sessions, none of them expired; nothing was created."""


class SnapshotError(AiotpError):
    """A snapshot file or an exported session is missing, truncated or corrupt; nothing was
    loaded."""


class IllegalTransition(AiotpError, ValueError):
    """The caller asked for a state change the store's transition table does not allow (or
    for a state the table does not know). The session is unchanged; it is still in
    ``from_state`` as far as this call could see, and another thread may have moved it since.
    """

    def __init__(
        self, session_id: str, from_state: str, to_state: str, allowed: frozenset[str]
    ) -> None:
        self.session_id = session_id
        self.from_state = from_state
        self.to_state = to_state
        self.allowed = allowed
        nexts = ", ".join(sorted(allowed)) or "nothing (terminal state)"
        super().__init__(
            f"session {session_id!r}: {from_state} -> {to_state} is not allowed; "
            f"from {from_state}: {nexts}"
        )


class SubscriberLagged(AiotpError):
    """A subscriber with ``overflow="close"`` fell ``max_queue`` events behind; its
    subscription is over and the events it had not read are gone. The session itself is
    unaffected: read its current state with `SessionStore.peek` and subscribe again."""

    def __init__(self, session_id: str, max_queue: int) -> None:
        self.session_id = session_id
        self.max_queue = max_queue
        super().__init__(
            f"subscriber of session {session_id!r} fell behind: its queue of "
            f"{max_queue} events overflowed, the subscription is closed"
        )
