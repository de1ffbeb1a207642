"""What only the Redis store has: key expiry on the server's clock, prefixes, removal hooks once
across instances, optimistic updates under contention, garbage in and on the server, the runtime
running its sweeps, and a core that imports without redis."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from typing import Any

import pytest

import aiotp
from aiotp.session_store.errors import (
    SessionNotFound,
    SessionStoreError,
    SnapshotError,
)
from aiotp.session_store.redis_store import RedisSessionStore


async def test_ttl_is_redis_key_expiry_on_the_servers_clock(make_store: Any) -> None:
    store: RedisSessionStore = make_store(ttl=0.3, expiry_grace=0.2)
    removed: list[tuple[str, str, Any]] = []
    store.on_remove(lambda sid, reason, s: removed.append((sid, reason, s)))
    await store.create("a", metadata={"k": 1})
    await store.create("b", metadata={"k": 2})
    client = store._redis()
    pttl = await client.pttl(f"{{{store.prefix}}}:s:a")
    assert 400 <= pttl <= 500  # the TTL plus the grace, in ms
    await asyncio.sleep(0.35)
    # Past its deadline: absent at once, though the key is still there for the hooks.
    with pytest.raises(SessionNotFound):
        await store.get("a")
    assert removed[0][:2] == ("a", "expired") and removed[0][2].metadata == {"k": 1}
    await asyncio.sleep(0.3)
    assert not await client.exists(f"{{{store.prefix}}}:s:b")  # Redis dropped it by itself
    assert await store.sweep() == 1  # still reported, once, with only its id left
    assert removed[1][:2] == ("b", "expired") and removed[1][2].id == "b"
    assert await store.count() == 0 and await store.sweep() == 0


async def test_prefixes_keep_stores_apart_and_a_shared_prefix_shares(make_store: Any) -> None:
    one: RedisSessionStore = make_store(prefix="left-" + str(id(make_store)))
    two: RedisSessionStore = make_store(prefix="right-" + str(id(make_store)))
    again: RedisSessionStore = make_store(prefix=one.prefix)
    await one.create("x", metadata={"who": "one"})
    await two.create("x", metadata={"who": "two"})
    assert (await again.get("x")).metadata == {"who": "one"}
    assert (await two.get("x")).metadata == {"who": "two"}
    await again.delete("x")
    assert not await one.exists("x") and await two.exists("x")
    for bad in ("", "a{b", "c}", 3):
        with pytest.raises(ValueError):
            RedisSessionStore(prefix=bad)  # type: ignore[arg-type]


async def test_hooks_fire_once_across_instances_racing_to_remove(
    make_store: Any, clock: Any
) -> None:
    instances: list[RedisSessionStore] = [make_store(clock=clock, ttl=10) for _ in range(3)]
    seen: list[list[str]] = [[], [], []]
    for store, log in zip(instances, seen, strict=True):
        store.on_remove(lambda sid, reason, s, log=log: log.append(sid))
    ids = [f"s{i}" for i in range(300)]
    await asyncio.gather(*(instances[0].create(sid) for sid in ids))
    clock.now += 11
    await asyncio.gather(
        instances[0].sweep(),
        instances[1].sweep(),
        *(_quiet(instances[2].get(sid)) for sid in ids[::-1]),
        *(instances[1].delete(sid) for sid in ids[::2]),
    )
    everyone = seen[0] + seen[1] + seen[2]
    assert sorted(everyone) == sorted(ids)
    stats = await instances[1].stats()
    assert stats.sessions_expired == 300 and stats.current_sessions == 0


async def _quiet(call: Any) -> None:
    with contextlib.suppress(SessionNotFound):
        await call


async def test_concurrent_updates_in_one_process_lose_nothing(make_store: Any) -> None:
    store: RedisSessionStore = make_store()
    await store.create("c", metadata={"n": 0})
    runs = 0

    def add(s: aiotp.Session) -> None:
        nonlocal runs
        runs += 1
        s.metadata["n"] += 1

    touches = [store.get("c") for _ in range(100)]
    await asyncio.gather(*(store.update("c", add) for _ in range(100)), *touches)
    s = await store.peek("c")
    assert s.metadata["n"] == 100 and runs >= 100  # fn ran again after each conflict
    assert s.stats["accesses"] == 200  # touches add up with updates, none overwritten


async def test_an_update_racing_a_pin_runs_again_and_keeps_the_pin(make_store: Any) -> None:
    store: RedisSessionStore = make_store()
    await store.create("c", metadata={"n": 0})
    real = store._eval
    raced = False

    async def pin_first(src: str, op: str, *args: Any, **options: Any) -> Any:
        nonlocal raced
        if op == "update" and args[1] == "cas" and not raced:
            raced = True  # a pin commits between the update's read and its write
            await store.pin("c", "ml", "w-1")
        return await real(src, op, *args, **options)

    store._eval = pin_first  # type: ignore[method-assign]
    runs = 0

    def add(s: aiotp.Session) -> None:
        nonlocal runs
        runs += 1
        s.metadata["n"] += 1

    out = await store.update("c", add)
    assert runs == 2 and out.metadata == {"n": 1} and out.affinity == {"ml": "w-1"}
    s = await store.peek("c")
    assert s.affinity == {"ml": "w-1"} and s.metadata == {"n": 1}


async def test_non_msgpack_data_is_refused_naming_it_and_changes_nothing(make_store: Any) -> None:
    store: RedisSessionStore = make_store()
    with pytest.raises(TypeError, match=r"metadata\['conn'\]"):
        await store.create("a", metadata={"conn": object()})
    assert not await store.exists("a")
    await store.create("a", metadata={"n": 1})
    with pytest.raises(TypeError, match=r"programs\['model'\]"):
        await store.update("a", lambda s: s.put_program("model", {1, 2}))
    with pytest.raises(TypeError, match="published data"):
        await store.publish("a", object())
    assert (await store.peek("a")).programs == {}
    with pytest.raises(ValueError, match="UTF-8"):
        await store.get("bad\ud800id")
    with pytest.raises(TypeError):
        await store.update("a", lambda s: setattr(s, "metadata", ["not", "a", "dict"]))
    with pytest.raises(ValueError, match="ttl"):
        await store.update("a", lambda s: setattr(s, "ttl", -5))
    for junk in (b"", b"\xc1", b"not an export", 42):
        with pytest.raises((SnapshotError, TypeError)):
            await store.import_session(junk)  # type: ignore[arg-type]
    assert (await store.peek("a")).metadata == {"n": 1}


async def test_garbage_on_the_server_is_a_typed_error_not_half_a_session(
    make_store: Any,
) -> None:
    store: RedisSessionStore = make_store()
    client = store._redis()
    key = f"{{{store.prefix}}}:s:"
    await store.create("corrupt")
    await client.hset(key + "corrupt", "m", b"\xc1\xc1 not msgpack")
    with pytest.raises(SessionStoreError, match="metadata"):
        await store.get("corrupt")
    await client.set(key + "wrongtype", b"a string where a hash belongs")
    with pytest.raises(SessionStoreError, match="server said"):
        await store.get("wrongtype")
    # Someone else's message on a session's event channel is ignored.
    await store.create("ev")
    async with store.subscribe("ev") as sub:
        await client.publish(f"{{{store.prefix}}}:ev:ev", b"\x00garbage")
        await store.publish("ev", "real")
        event = await asyncio.wait_for(anext(sub), 5)
        assert (event.kind, event.data) == ("published", "real")


async def test_the_runtime_runs_the_stores_sweeps_and_stops_them(
    make_store: Any, clock: Any
) -> None:
    store: RedisSessionStore = make_store(clock=clock, ttl=1, sweep_interval=0.02)
    removed = asyncio.Event()
    store.on_remove(lambda *a: removed.set())
    async with aiotp.Runtime(sessions=store) as rt:
        assert rt.sessions is store
        await store.create("a")
        clock.now += 5
        await asyncio.wait_for(removed.wait(), 5)
    assert store._client is None  # its connections were closed with the runtime
    assert (await store.stats()).cleanup_runs >= 1  # and open again on the next call


async def test_subscriptions_from_two_instances_and_async_for(make_store: Any) -> None:
    here: RedisSessionStore = make_store()
    there: RedisSessionStore = make_store()
    await here.create("job")
    sub = await there.subscribe("job")
    await here.transition("job", "running")
    await here.delete("job")
    async with asyncio.timeout(5):
        got = [(e.kind, e.data) async for e in sub]
    assert got == [("state", {"from": "pending", "to": "running"}), ("end", {"reason": "deleted"})]
    await here.create("job2")

    async def finish() -> None:
        await asyncio.sleep(0.05)
        await here.publish("job2", [1, 2])
        await here.delete("job2")

    task = asyncio.create_task(finish())
    async with asyncio.timeout(5):
        kinds = [e.kind async for e in there.subscribe("job2")]
    await task
    assert kinds == ["published", "end"]
    assert (await there.stats()).subscribers == 0


def test_the_core_imports_without_redis() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import aiotp, aiotp.session_store as ss\n"
        "assert aiotp.SessionStore and ss.SessionStoreUnavailable\n"
        "assert 'aiotp.session_store.redis_store' not in sys.modules\n"
        "try:\n"
        "    ss.RedisSessionStore\n"
        "except ImportError as e:\n"
        "    assert 'aiotp[redis]' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('imported without redis?')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


def test_bad_options_are_refused_at_construction() -> None:
    for bad in (
        {"url": "localhost:6379"},
        {"timeout": 0},
        {"connect_timeout": -1},
        {"expiry_grace": 0},
        {"max_connections": 0},
        {"ttl": 1e12},
        {"initial_state": "nope"},
    ):
        with pytest.raises(ValueError):
            RedisSessionStore(**bad)
    assert "6379" in repr(RedisSessionStore())
    assert time.time() > 0
