"""Redis down, unreachable or silent: typed errors naming the store, within the store's deadline,
never a hang; a pool keeps serving the calls that carry no session; the store recovers when the
server is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path

import pytest
from redis_server import RedisServer
from session_adapters import Stateful

import aiotp
from aiotp.session_store.errors import SessionStoreError, SessionStoreUnavailable
from aiotp.session_store.redis_store import RedisSessionStore

FAST = {"timeout": 1.0, "connect_timeout": 0.5, "socket_timeout": 0.5}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens there once it is closed


async def test_an_unreachable_server_gives_a_typed_error_naming_the_store_and_operation() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{_closed_port()}/0"
    store = RedisSessionStore(url, **FAST)
    t0 = time.monotonic()
    for op, call in [
        ("create", store.create("a")),
        ("get", store.get("a")),
        ("update", store.update("a", lambda s: None)),
        ("delete", store.delete("a")),
        ("sweep", store.sweep()),
        ("stats", store.stats()),
    ]:
        with pytest.raises(SessionStoreUnavailable) as info:
            await call
        err = info.value
        assert isinstance(err, SessionStoreError) and isinstance(err, aiotp.AiotpError)
        assert err.operation == op and f"127.0.0.1:{url.rsplit(':', 1)[1]}" in str(err)
        assert "s3cret" not in str(err) and "user:***@" in err.store
    assert time.monotonic() - t0 < 6 * FAST["timeout"] + 2
    with pytest.raises(SessionStoreUnavailable):
        async with store.subscribe("a"):
            pass
    await store.stop()


async def test_a_server_that_never_answers_times_out_instead_of_hanging() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts, reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisSessionStore(f"redis://127.0.0.1:{port}/0", **FAST)
    try:
        t0 = time.monotonic()
        with pytest.raises(SessionStoreUnavailable, match="get"):
            await store.get("a")
        assert time.monotonic() - t0 < FAST["timeout"] + 1.0
    finally:
        await store.stop()
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.mark.slow
async def test_killing_redis_mid_load_fails_session_calls_fast_and_serves_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer.start(tmp_path)
    store = RedisSessionStore(server.url, prefix="outage", sweep_interval=0.1, **FAST)
    outcomes: list[tuple[str, float, float, str]] = []  # kind, start, duration, result
    killed_at: float | None = None
    stop = asyncio.Event()
    try:
        async with aiotp.Runtime(sessions=store) as rt:
            await rt.start_pool("p", Stateful, profile="thread", size=3, heartbeat=None)

            async def load(k: int) -> None:
                while not stop.is_set():
                    for kind, session in (("session", f"s{k}"), ("plain", None)):
                        t0 = time.monotonic()
                        try:
                            await rt.execute("p", "bump", {}, session=session, timeout=5)
                            result = "ok"
                        except Exception as exc:
                            result = type(exc).__name__
                        outcomes.append((kind, t0, time.monotonic() - t0, result))
                    await asyncio.sleep(0.005)

            with caplog.at_level(logging.WARNING, logger="aiotp.sessions"):
                tasks = [asyncio.create_task(load(k)) for k in range(6)]
                await asyncio.sleep(0.5)
                server.kill()
                killed_at = time.monotonic()
                await asyncio.sleep(2.5)  # several store deadlines and sweeps while it is down
                stop.set()
                async with asyncio.timeout(10):
                    await asyncio.gather(*tasks)
                with pytest.raises(SessionStoreUnavailable):
                    await store.get("s0")

                # The server comes back (empty: no persistence) on the same port.
                server = RedisServer.start_on(tmp_path, server.port)
                async with asyncio.timeout(10):
                    while True:
                        with contextlib.suppress(SessionStoreUnavailable):
                            r = await rt.execute("p", "bump", {}, session="after", timeout=5)
                            break
                        await asyncio.sleep(0.1)
                assert r["count"] == 1
    finally:
        server.stop()
    assert killed_at is not None
    before = [o for o in outcomes if o[1] + o[2] < killed_at]
    after = [o for o in outcomes if o[1] > killed_at + 0.1]
    assert before and all(o[3] == "ok" for o in before)
    plain_after = [o for o in after if o[0] == "plain"]
    session_after = [o for o in after if o[0] == "session"]
    assert len(plain_after) >= 6 and all(o[3] == "ok" for o in plain_after)
    assert session_after and {o[3] for o in session_after} == {"SessionStoreUnavailable"}
    worst = max(o[2] for o in outcomes)
    assert worst < FAST["timeout"] * 2 + 1, f"a call took {worst:.2f} s"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("session sweep skipped" in m for m in warnings)


async def test_subscribers_learn_of_an_outage_and_of_ends_they_missed(tmp_path: Path) -> None:
    server = RedisServer.start(tmp_path)
    store = RedisSessionStore(server.url, prefix="gap", **FAST)
    try:
        await store.create("kept")
        await store.create("lost")
        kept = await store.subscribe("kept")
        lost = await store.subscribe("lost")
        server.kill()
        await asyncio.sleep(1.0)  # the listener notices, and keeps trying
        server = RedisServer.start_on(tmp_path, server.port)  # back, empty (no persistence)
        await store.create("kept")
        async with asyncio.timeout(10):
            while True:  # the listener is back once a publish reaches the subscriber
                await store.publish("kept", "after")
                try:
                    event = await asyncio.wait_for(anext(kept), 1.0)
                except TimeoutError:
                    continue  # published before the listener was back: lost, as promised
                if event.kind == "published":
                    break
                assert (event.kind, event.data) == ("lagged", {"dropped": None})
            got = [(e.kind, e.data) async for e in lost]
        assert got == [("lagged", {"dropped": None}), ("end", {"reason": "unknown"})]
        kept.close()
    finally:
        await store.stop()
        server.stop()
