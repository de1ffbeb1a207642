"""The sharded concurrent table and the session store built on it (no runtime needed)."""

from aiotp.session_store.errors import (
    SessionExists,
    SessionNotFound,
    SessionQuotaExceeded,
    SnapshotError,
)
from aiotp.session_store.session import Session
from aiotp.session_store.store import SessionStore, StoreStats
from aiotp.session_store.table import Table, TableInfo

__all__ = [
    "Session",
    "SessionExists",
    "SessionNotFound",
    "SessionQuotaExceeded",
    "SessionStore",
    "SnapshotError",
    "StoreStats",
    "Table",
    "TableInfo",
]
