"""Fixtures of the Redis session store tests: one real redis-server per test module, a fresh
key prefix per test (so tests never see each other's sessions), and stores that are closed at
the end of the test.

Without redis-server on PATH these tests skip with one line saying how to install it; with
``AIOTP_REQUIRE_REDIS=1`` (CI) they fail instead.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis_server import RedisServer, require_redis

_prefixes = itertools.count(1)


@pytest.fixture(scope="module", autouse=True)
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    # Autouse, so that it starts before any test's own fixtures: the suite's check for
    # leftover child processes (tests/conftest.py) must count it as there before the test.
    # One per module (a start costs ~50 ms), not per session: tests elsewhere that check this
    # process has no child at all must not find it still running.
    require_redis()
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test (or earlier run) uses."""
    return f"t{os.getpid()}-{next(_prefixes)}"


class Clock:
    """A clock that moves only when the test sets ``now`` (as tests/session_store's)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def make_store(redis_url: str, prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """``make_store(**options)``: a RedisSessionStore on the test server under this test's
    prefix (or ``prefix=`` given); every one made is stopped at the end."""
    from aiotp.session_store.redis_store import RedisSessionStore

    made: list[RedisSessionStore] = []

    def make(**options: Any) -> RedisSessionStore:
        options.setdefault("prefix", prefix)
        store = RedisSessionStore(redis_url, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()
