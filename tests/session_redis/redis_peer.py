"""Another app instance for the multi-process tests: a real process with its own Runtime whose
store is a RedisSessionStore on the test's server and prefix.

    python redis_peer.py URL PREFIX SCENARIO NAME [ARGS_JSON]

Says it is ready (INCR ``PREFIX:ready`` on the server), waits for the test's go (the key
``PREFIX:go``), so that peers begin together, runs SCENARIO, prints one JSON line with what it
saw, and exits 0. A scenario never runs longer than 60 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import aiotp
from aiotp.session_store.errors import SessionExists, SessionNotFound, SessionQuotaExceeded
from aiotp.session_store.redis_store import RedisSessionStore


async def share(store: RedisSessionStore, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The creator creates; the other waits for it, reads it, and adds its mark; the creator
    waits for that mark. Both runtimes are alive the whole time."""
    sid = args["session"]
    if args["creator"] == name:
        await store.create(sid, metadata={"created_by": name})
        while "updated_by" not in (await store.peek(sid)).metadata:
            await asyncio.sleep(0.01)
        seen = await store.get(sid)
    else:
        while True:
            try:
                seen = await store.get(sid)
                break
            except SessionNotFound:
                await asyncio.sleep(0.01)
        seen = await store.update(sid, lambda s: s.put_metadata("updated_by", name))
    return {"metadata": seen.metadata, "created_at": seen.created_at}


async def quota(store: RedisSessionStore, name: str, args: dict[str, Any]) -> dict[str, Any]:
    ids = [f"{name}-{i}" for i in range(args["each"])]
    results = await asyncio.gather(*(store.create(sid) for sid in ids), return_exceptions=True)
    made = [sid for sid, r in zip(ids, results, strict=True) if not isinstance(r, BaseException)]
    refused = sum(isinstance(r, SessionQuotaExceeded) for r in results)
    other = [
        repr(r)
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, SessionQuotaExceeded)
    ]
    return {"made": made, "refused": refused, "other": other[:3]}


async def increments(store: RedisSessionStore, name: str, args: dict[str, Any]) -> dict[str, Any]:
    sid = args["session"]
    with contextlib.suppress(SessionExists):
        await store.create(sid, metadata={"n": 0})

    def add(s: aiotp.Session) -> None:
        s.metadata["n"] = s.metadata.get("n", 0) + 1
        s.metadata[f"by-{name}"] = s.metadata.get(f"by-{name}", 0) + 1

    done = 0
    for _ in range(args["rounds"]):
        await asyncio.gather(*(store.update(sid, add) for _ in range(args["concurrent"])))
        done += args["concurrent"]
    return {"done": done}


async def expiry(store: RedisSessionStore, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Sweeps run by the runtime every 50 ms, and this instance also peeks at the sessions
    (without touching them) as they expire: every removal it makes is recorded by its hook."""
    removed: list[tuple[str, str]] = []
    store.on_remove(lambda sid, reason, s: removed.append((sid, reason)))
    ids = args["ids"]
    started = time.monotonic()
    deadline = time.monotonic() + 30
    async with aiotp.Runtime(sessions=store):
        while time.monotonic() < deadline and (
            await store.count() or time.monotonic() < started + 0.5
        ):
            for sid in ids[:: 1 if name == "a" else -1]:
                with contextlib.suppress(SessionNotFound):
                    await store.peek(sid)
            await asyncio.sleep(0.01)
        left = await store.count()
    return {"removed": removed, "left": left}


SCENARIOS = {"share": share, "quota": quota, "increments": increments, "expiry": expiry}


async def main() -> None:
    url, prefix, scenario, name = sys.argv[1:5]
    args = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    options = args.pop("store", {})
    store = RedisSessionStore(url, prefix=prefix, **options)
    async with asyncio.timeout(60):
        await store._redis().incr(f"{prefix}:ready")
        while not await store._redis().exists(f"{prefix}:go"):
            await asyncio.sleep(0.005)
        if scenario == "expiry":
            out = await SCENARIOS[scenario](store, name, args)
        else:
            async with aiotp.Runtime(sessions=store):
                out = await SCENARIOS[scenario](store, name, args)
    await store.stop()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
