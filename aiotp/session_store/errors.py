"""Session store errors: all `SessionStoreError`s, hence `AiotpError`s."""

from __future__ import annotations

from aiotp.errors import AiotpError

__all__ = [
    "IllegalTransition",
    "SessionExists",
    "SessionNotFound",
    "SessionQuotaExceeded",
    "SessionStoreError",
    "SessionStoreUnavailable",
    "SnapshotError",
    "SubscriberLagged",
]


class SessionStoreError(AiotpError):
    """Base class of every error a session store raises (in memory or on Redis)."""


class SessionStoreUnavailable(SessionStoreError):
    """The store's server could not be reached or did not answer in time (`RedisSessionStore`).

    Whose fault: the network's or the server's, not the caller's. What the caller may assume: the
    operation may or may not have been applied on the server (a write whose reply was lost did
    happen); nothing was changed locally and no removal hook ran for it. Retrying later is safe
    for reads and for `delete`; a retried `create` may meet its own first attempt
    (`SessionExists`). ``store`` names the store (its URL, password hidden), ``operation`` what
    was asked.
    """

    def __init__(self, store: str, operation: str, cause: object) -> None:
        self.store = store
        self.operation = operation
        self.cause = str(cause)
        super().__init__(f"session store {store} is unavailable: {operation} failed: {cause}")

    def __reduce__(self) -> tuple[type[SessionStoreUnavailable], tuple[str, str, str]]:
        return (type(self), (self.store, self.operation, self.cause))


class SessionExists(SessionStoreError):
    """A live session already has this id; nothing was created."""


class SessionNotFound(SessionStoreError, KeyError):
    """No live session has this id (it never existed, was deleted, or expired)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "session not found"


class SessionQuotaExceeded(SessionStoreError):
    """The store holds `max_sessions` sessions, none of them expired; nothing was created."""


class SnapshotError(SessionStoreError):
    """A snapshot file or an exported session is missing, truncated or corrupt; nothing was
    loaded."""


class IllegalTransition(SessionStoreError, ValueError):
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


class SubscriberLagged(SessionStoreError):
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
