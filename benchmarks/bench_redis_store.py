"""The Redis session store against the raw `redis` client doing the least the same job needs, on
the same server in the same run (a redis-server this benchmark starts on a loopback port).

Rows (microseconds per operation, one at a time, then 32 at once):
- get: `RedisSessionStore.get` (one script: expiry check, touch, the session back) vs a raw GET of
  a value of the same size (the floor of any read), and vs a raw EVALSHA of the least script
  that reads atomically what a touch needs (HMGET, TIME, HSET, ZADD, PEXPIRE: the Lua floor);
- update: `update` (read, fn, compare-and-set: two scripts) vs a raw GET + SET (which may lose
  an update), and vs the raw client's own safe read-modify-write (WATCH, GET, MULTI/SET/EXEC);
- create: `create` (one script: quota, insert, indexes) vs a raw EVALSHA of a minimal create
  script (EXISTS, ZCARD, HSET, ZADD, PEXPIRE);
- get, 32 in flight: throughput against 32 raw GETs in flight.
Target: every ratio <= 1.3. What a get costs beyond a GET is mostly the server running a script
(about 20 us of Lua against 0.3 us for a GET, on this kind of machine) and its longer reply;
the ratio against the Lua floor is the store's own cost.

    python benchmarks/bench_redis_store.py [--json] [--quick]

Without redis-server (``apt-get install redis-server``) or the ``redis`` package it says so on
stderr and exits 0, printing no rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgpack
from harness import Row, alternate, emit, parse_args

from aiotp.runtime.loop import loop_factory

METADATA = {"user_id": "u-123456", "plan": "pro", "locale": "en-GB", "weights": [1.0, 2.0, 3.0]}
RAW_TOUCH = """
local f = redis.call('HMGET', KEYS[1], 'la', 'ttl', 'm')
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if now - tonumber(f[1]) > tonumber(f[2]) then return false end
redis.call('HSET', KEYS[1], 'la', now)
redis.call('ZADD', KEYS[2], now + tonumber(f[2]), KEYS[1])
redis.call('PEXPIRE', KEYS[1], 3600000)
return f[3]
"""
RAW_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'la', ARGV[2], 'ttl', ARGV[3], 'm', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2] + ARGV[3], KEYS[1])
redis.call('PEXPIRE', KEYS[1], 3600000)
return 1
"""


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free loopback port; None when there is none to run."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.2) as c,
                ):
                    c.sendall(b"PING\r\n")
                    if c.recv(8).startswith(b"+PONG"):
                        break
                time.sleep(0.02)
            else:
                raise RuntimeError("redis-server did not answer PING within 10 s")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


async def _timed(n: int, op: Callable[[int], Awaitable[Any]]) -> float:
    for i in range(n // 10):  # warm: connections open, scripts loaded, caches hot
        await op(-1 - i)
    t0 = time.perf_counter()
    for i in range(n):
        await op(i)
    return (time.perf_counter() - t0) / n * 1e6


async def _timed_parallel(n: int, width: int, op: Callable[[int], Awaitable[Any]]) -> float:
    async def lane(k: int) -> None:
        for i in range(k, n, width):
            await op(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(lane(k) for k in range(width)))
    return n / (time.perf_counter() - t0)


def main() -> None:
    args = parse_args(__doc__ or "")
    try:
        import redis.asyncio as aioredis

        from aiotp.session_store.redis_store import RedisSessionStore
    except ImportError:
        print("bench_redis_store: skipped, pip install 'aiotp[redis]'", file=sys.stderr)
        return
    runs = args.runs or (5 if args.quick else 9)
    n = 1_000 if args.quick else 5_000
    with redis_server() as url:
        if url is None:
            print("bench_redis_store: skipped, apt-get install redis-server", file=sys.stderr)
            return
        loop = loop_factory()()
        loop_name = type(loop).__module__.split(".")[0]
        store = RedisSessionStore(url, prefix="bench", max_sessions=10_000_000)
        raw = aioredis.Redis.from_url(url)
        run = loop.run_until_complete
        blob = msgpack.packb(
            {"metadata": METADATA, "programs": {}, "state": "pending", "ttl": 3600.0}
        )
        run(raw.flushall())
        run(store.create("hot", metadata=METADATA))
        run(raw.set("raw-hot", blob))
        sha = run(raw.script_load(RAW_CREATE))
        touch_sha = run(raw.script_load(RAW_TOUCH))
        run(raw.hset("raw-touch", mapping={"la": time.time(), "ttl": 3600, "m": blob}))
        ids = itertools.count()

        def add(s: Any) -> None:
            s.metadata["n"] = s.metadata.get("n", 0) + 1

        async def raw_update(_i: int) -> None:
            data = await raw.get("raw-hot")
            doc = msgpack.unpackb(data)
            doc["metadata"]["n"] = doc["metadata"].get("n", 0) + 1
            await raw.set("raw-hot", msgpack.packb(doc))

        async def raw_watched_update(_i: int) -> None:
            async with raw.pipeline(transaction=True) as pipe:
                await pipe.watch("raw-hot")
                doc = msgpack.unpackb(await pipe.get("raw-hot"))
                doc["metadata"]["n"] = doc["metadata"].get("n", 0) + 1
                pipe.multi()
                pipe.set("raw-hot", msgpack.packb(doc))
                await pipe.execute()

        async def store_create(_i: int) -> None:
            await store.create(f"s{next(ids)}", metadata=METADATA)

        async def raw_create(_i: int) -> None:
            sid = f"r{next(ids)}"
            await raw.evalsha(sha, 2, sid, "raw-exp", 10_000_000, time.time(), 3600,
                              msgpack.packb(METADATA))  # fmt: skip

        rows: list[Row] = [
            alternate(
                f"redis store get [{loop_name}]",
                "us/op",
                "lower",
                lambda: run(_timed(n, lambda _i: store.get("hot"))),
                "raw redis GET of the same size",
                lambda: run(_timed(n, lambda _i: raw.get("raw-hot"))),
                runs,
                target="ratio <= 1.3",
            ),
            alternate(
                f"redis store get vs the Lua floor [{loop_name}]",
                "us/op",
                "lower",
                lambda: run(_timed(n, lambda _i: store.get("hot"))),
                "raw redis EVALSHA of a minimal touch",
                lambda: run(_timed(n, lambda _i: raw.evalsha(touch_sha, 2, "raw-touch", "x"))),
                runs,
                target="ratio <= 1.3",
            ),
            alternate(
                f"redis store update [{loop_name}]",
                "us/op",
                "lower",
                lambda: run(_timed(n, lambda _i: store.update("hot", add))),
                "raw redis GET + SET",
                lambda: run(_timed(n, raw_update)),
                runs,
                target="ratio <= 1.3",
            ),
            alternate(
                f"redis store update vs WATCH/MULTI [{loop_name}]",
                "us/op",
                "lower",
                lambda: run(_timed(n, lambda _i: store.update("hot", add))),
                "raw redis WATCH, GET, MULTI, SET, EXEC",
                lambda: run(_timed(n, raw_watched_update)),
                runs,
                target="ratio <= 1.3",
            ),
            alternate(
                f"redis store create [{loop_name}]",
                "us/op",
                "lower",
                lambda: run(_timed(n, store_create)),
                "raw redis EVALSHA of a minimal create",
                lambda: run(_timed(n, raw_create)),
                runs,
                target="ratio <= 1.3",
            ),
            alternate(
                f"redis store get, 32 in flight [{loop_name}]",
                "ops/s",
                "higher",
                lambda: run(_timed_parallel(n * 4, 32, lambda _i: store.get("hot"))),
                "raw redis GET, 32 in flight",
                lambda: run(_timed_parallel(n * 4, 32, lambda _i: raw.get("raw-hot"))),
                runs,
                target="ratio >= 0.77 (1/1.3)",
            ),
        ]
        run(store.stop())
        run(raw.aclose())
        loop.close()
    emit(rows, args.json)


if __name__ == "__main__":
    main()
