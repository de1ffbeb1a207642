"""Two app instances in two real processes share one Redis store: a session one creates the other
sees and updates; concurrent creators never overshoot the quota; concurrent updates lose
nothing; expiry removes every session once, its hooks firing in exactly one process."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from aiotp.session_store.redis_store import RedisSessionStore

PEER = Path(__file__).with_name("redis_peer.py")


async def run_peers(
    url: str,
    prefix: str,
    scenario: str,
    args: dict[str, Any],
    before_go: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run peers "a" and "b" at once: both ready (their imports done), then `before_go`, then
    both go together. Returns what each printed."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(PEER), url, prefix, scenario, name, json.dumps(args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in ("a", "b")
    ]  # fmt: skip
    try:
        client = aioredis.Redis.from_url(url)
        try:
            async with asyncio.timeout(60):
                while int(await client.get(f"{prefix}:ready") or 0) < 2:
                    await asyncio.sleep(0.01)
            if before_go is not None:
                await before_go()
            await client.set(f"{prefix}:go", 1)
        finally:
            await client.aclose()
        async with asyncio.timeout(90):
            outs = await asyncio.gather(*(p.communicate() for p in procs))
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    results = {}
    for name, p, (out, err) in zip(("a", "b"), procs, outs, strict=True):
        assert p.returncode == 0, f"peer {name} failed:\n{err.decode()[-3000:]}"
        results[name] = json.loads(out.decode().strip().splitlines()[-1])
    return results


async def test_a_session_created_by_one_process_is_seen_and_updated_by_the_other(
    redis_url: str, prefix: str, make_store: Any
) -> None:
    out = await run_peers(redis_url, prefix, "share", {"session": "shared", "creator": "a"})
    assert out["a"]["metadata"] == {"created_by": "a", "updated_by": "b"}
    assert out["b"]["metadata"] == {"created_by": "a", "updated_by": "b"}
    assert out["a"]["created_at"] == out["b"]["created_at"]  # one session, not two
    here: RedisSessionStore = make_store()
    assert (await here.peek("shared")).metadata == {"created_by": "a", "updated_by": "b"}
    stats = await here.stats()
    assert stats.sessions_created == 1 and stats.current_sessions == 1


async def test_concurrent_creators_in_two_processes_never_overshoot_the_quota(
    redis_url: str, prefix: str, make_store: Any
) -> None:
    out = await run_peers(redis_url, prefix, "quota", {"each": 300, "store": {"max_sessions": 250}})
    made = out["a"]["made"] + out["b"]["made"]
    assert out["a"]["other"] == [] and out["b"]["other"] == []
    assert len(made) == 250 and len(set(made)) == 250
    assert out["a"]["refused"] + out["b"]["refused"] == 600 - 250
    here: RedisSessionStore = make_store(max_sessions=250)
    assert await here.count() == 250 and sorted(await here.ids()) == sorted(made)


async def test_concurrent_updates_from_two_processes_lose_nothing(
    redis_url: str, prefix: str, make_store: Any
) -> None:
    args = {"session": "counter", "rounds": 10, "concurrent": 20}
    out = await run_peers(redis_url, prefix, "increments", args)
    assert out["a"]["done"] == out["b"]["done"] == 200
    s = await make_store().peek("counter")
    assert s.metadata == {"n": 400, "by-a": 200, "by-b": 200}
    assert s.stats["accesses"] == 400  # every update counted once, none overwritten


async def test_expiry_and_sweeps_fire_removal_hooks_once_across_two_processes(
    redis_url: str, prefix: str, make_store: Any
) -> None:
    ids = [f"s{i}" for i in range(200)]
    store: RedisSessionStore = make_store(heartbeat_timeout=0.5)

    async def create() -> None:  # once both peers run: expiries spread over 2 s
        for i, sid in enumerate(ids):
            await store.create(sid, ttl=1.0 + (i % 20) * 0.1)
            if i % 4 == 0:  # a quarter wait for input with no heartbeat: closed by the GC
                await store.set_awaiting_input(sid)

    options = {"heartbeat_timeout": 0.5, "sweep_interval": 0.05}
    out = await run_peers(redis_url, prefix, "expiry", {"ids": ids, "store": options}, create)
    removals = [tuple(r) for r in out["a"]["removed"] + out["b"]["removed"]]
    assert sorted(sid for sid, _ in removals) == sorted(ids)  # each exactly once, in total
    assert out["a"]["removed"] and out["b"]["removed"]  # both took part
    reasons = {sid: reason for sid, reason in removals}
    assert {reasons[sid] for sid in ids[::4]} == {"gc"}
    assert {reasons[sid] for i, sid in enumerate(ids) if i % 4} == {"expired"}
    stats = await store.stats()
    assert stats.current_sessions == 0
    assert stats.sessions_expired + stats.sessions_gc == 200
