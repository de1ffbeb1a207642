"""The sharded concurrent table and the session store built on it (no runtime needed)."""

from aiotp.session_store.errors import (
    IllegalTransition,
    SessionExists,
    SessionNotFound,
    SessionQuotaExceeded,
    SnapshotError,
    SubscriberLagged,
)
from aiotp.session_store.events import SessionEvent, Subscription
from aiotp.session_store.session import Session
from aiotp.session_store.store import SessionStore, StoreStats
from aiotp.session_store.table import Table, TableInfo

__all__ = [
    "IllegalTransition",
    "Session",
    "SessionEvent",
    "SessionExists",
    "SessionNotFound",
    "SessionQuotaExceeded",
    "SessionStore",
    "SnapshotError",
    "StoreStats",
    "SubscriberLagged",
    "Subscription",
    "Table",
    "TableInfo",
]
