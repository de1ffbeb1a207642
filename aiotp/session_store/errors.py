"""Session store errors (all `AiotpError`s)."""

from __future__ import annotations

from aiotp.errors import AiotpError

__all__ = ["SessionExists", "SessionNotFound", "SessionQuotaExceeded", "SnapshotError"]


class SessionExists(AiotpError):
    """A live session already has this id; nothing was created."""


class SessionNotFound(AiotpError, KeyError):
    """No live session has this id (it never existed, was deleted, or expired)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "session not found"


class SessionQuotaExceeded(AiotpError):
    """The store holds `max_sessions` sessions; nothing was created."""


class SnapshotError(AiotpError):
    """A snapshot file is missing, truncated or corrupt; nothing was loaded."""
