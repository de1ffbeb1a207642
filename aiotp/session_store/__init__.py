"""The sharded concurrent table and the session store built on it (no runtime needed).

`RedisSessionStore` (the ``aiotp[redis]`` extra) is loaded on first use, not here: the core
imports without the ``redis`` package.
"""

from aiotp.session_store.errors import (
    IllegalTransition,
    SessionExists,
    SessionNotFound,
    SessionQuotaExceeded,
    SessionStoreError,
    SessionStoreUnavailable,
    SnapshotError,
    SubscriberLagged,
)
from aiotp.session_store.events import SessionEvent, Subscription
from aiotp.session_store.session import Session
from aiotp.session_store.store import SessionStore, StoreStats
from aiotp.session_store.table import Table, TableInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from aiotp.session_store.redis_store import RedisSessionStore as RedisSessionStore

__all__ = [
    "IllegalTransition",
    "Session",
    "SessionEvent",
    "SessionExists",
    "SessionNotFound",
    "SessionQuotaExceeded",
    "SessionStore",
    "SessionStoreError",
    "SessionStoreUnavailable",
    "SnapshotError",
    "StoreStats",
    "SubscriberLagged",
    "Subscription",
    "Table",
    "TableInfo",
]


def __getattr__(name: str) -> object:
    # PEP 562: `RedisSessionStore` imports the optional ``redis`` package, so only when asked
    # (and it is not in __all__: a star import must not need redis).
    if name == "RedisSessionStore":
        from aiotp.session_store.redis_store import RedisSessionStore as RedisSessionStore

        return RedisSessionStore
    raise AttributeError(f"module 'aiotp.session_store' has no attribute {name!r}")
