"""Bad input: each case gets a clear typed error, and the runtime keeps serving afterwards."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import aiotp

ECHO = "pool_adapters:Echo"


async def _still_serving(rt: aiotp.Runtime) -> None:
    assert await rt.execute("p", "echo", {"value": "ok"}, timeout=5) == "ok"


@pytest.fixture
async def prt() -> Any:
    async with aiotp.Runtime(shutdown_timeout=2.0) as rt:
        await rt.start_pool("p", ECHO, profile="process", size=2, max_frame=64 * 1024)
        yield rt


CASES: list[tuple[str, type[BaseException], Callable[[aiotp.Runtime], Awaitable[Any]]]] = [
    (
        "unserialisable args",
        aiotp.SerializationError,
        lambda rt: rt.execute("p", "echo", {"value": {1, 2}}),
    ),
    (
        "oversized args",
        aiotp.SerializationError,
        lambda rt: rt.execute("p", "echo", {"value": "x" * 100_000}),
    ),
    ("unknown pool", aiotp.UnknownPool, lambda rt: rt.execute("nope", "echo", {})),
    ("unknown tool", aiotp.UnknownTool, lambda rt: rt.execute("p", "nope", {})),
    (
        "wrong tool arguments",
        aiotp.ToolError,
        lambda rt: rt.execute("p", "echo", {"no_such_arg": 1}),
    ),
    ("session id not a string", TypeError, lambda rt: rt.execute("p", "echo", {}, session=42)),  # type: ignore[arg-type]
    ("zero timeout", ValueError, lambda rt: rt.execute("p", "echo", {}, timeout=0)),
    ("negative timeout", ValueError, lambda rt: rt.execute("p", "echo", {}, timeout=-1)),
    ("args not a dict", TypeError, lambda rt: rt.execute("p", "echo", [1])),  # type: ignore[arg-type]
    ("tool name not a string", TypeError, lambda rt: rt.execute("p", 3, {})),  # type: ignore[arg-type]
    ("zero pool size", ValueError, lambda rt: rt.start_pool("q", ECHO, size=0)),
    ("negative pool size", ValueError, lambda rt: rt.start_pool("q", ECHO, size=-2)),
    ("unknown pool option", TypeError, lambda rt: rt.start_pool("q", ECHO, sizes=2)),
    (
        "adapter path that does not import",
        aiotp.WorkerStartError,
        lambda rt: rt.start_pool("q", "no.such.module:Adapter", profile="process", size=1),
    ),
    (
        "adapter path without a class",
        aiotp.WorkerStartError,
        lambda rt: rt.start_pool("q", "pool_adapters:Missing", profile="process", size=1),
    ),
    ("duplicate pool name", aiotp.NameTaken, lambda rt: rt.start_pool("p", ECHO, size=1)),
]


# An adapter that cannot be loaded is reported once at ERROR (a worker start failure, as a
# supervisor's start error is in OTP) besides the typed error its caller gets.
@pytest.mark.expect_errors("failed to start")
@pytest.mark.parametrize(("case", "error", "action"), CASES, ids=[c[0] for c in CASES])
async def test_bad_input_gets_a_typed_error_and_the_runtime_keeps_serving(
    prt: aiotp.Runtime, case: str, error: type[BaseException], action: Any
) -> None:
    with pytest.raises(error):
        await asyncio.wait_for(action(prt), 30)
    await _still_serving(prt)
    assert prt.pool_stats("p").restarts == 0


async def test_a_worker_writing_garbage_is_killed_and_only_its_request_fails(
    prt: aiotp.Runtime,
) -> None:
    bystander = asyncio.ensure_future(prt.execute("p", "sleep", {"seconds": 0.3}, timeout=10))
    await asyncio.sleep(0.05)
    with pytest.raises(aiotp.WorkerCrashed):
        await prt.execute("p", "garbage", {}, timeout=10)
    assert await bystander == 0.3  # the other worker's request was untouched
    while prt.pool_stats("p").live < 2:
        await asyncio.sleep(0.01)
    assert prt.pool_stats("p").restarts == 1
    await _still_serving(prt)


async def test_calls_after_the_runtime_closed_raise_runtime_closed() -> None:
    rt = aiotp.Runtime()
    async with rt:
        await rt.start_pool("p", ECHO, profile="thread", size=1)
        ref = await rt.spawn(aiotp.Actor)
    with pytest.raises(aiotp.RuntimeClosed):
        await rt.execute("p", "echo", {})
    with pytest.raises(aiotp.RuntimeClosed):
        await rt.start_pool("again", ECHO)
    with pytest.raises(aiotp.RuntimeClosed):
        await rt.spawn(aiotp.Actor)
    with pytest.raises(aiotp.NoProc):
        await ref.call("x")


def test_session_store_under_load_from_threads_with_sweeps_running() -> None:
    store = aiotp.SessionStore(ttl=0.05, max_sessions=300)
    errors: list[BaseException] = []
    peak = 0
    stop = threading.Event()
    barrier = threading.Barrier(9)

    def worker(n: int) -> None:
        nonlocal peak
        barrier.wait()
        for i in range(3000):
            sid = f"{n}-{i % 50}"
            try:
                store.get_or_create(sid)
                store.update(sid, lambda s: s.stats.__setitem__("hits", s.stats.get("hits", 0) + 1))
                if i % 7 == 0:
                    store.delete(sid)
            except (aiotp.SessionQuotaExceeded, aiotp.SessionNotFound):
                pass  # legitimate under load: full store, or expired between two calls
            except BaseException as exc:
                errors.append(exc)
            peak = max(peak, store.stats().current_sessions)

    def sweeper() -> None:
        barrier.wait()
        while not stop.is_set():
            store.sweep()
            time.sleep(0.001)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    sweep_thread = threading.Thread(target=sweeper)
    for t in [*threads, sweep_thread]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sweep_thread.join()
    assert not errors, errors[:3]
    assert peak <= 300
    st = store.stats()
    assert st.current_sessions == len(store._table) <= 300
    assert st.sessions_created - st.sessions_deleted - st.sessions_expired == st.current_sessions


def test_counters_updated_through_the_store_lose_nothing() -> None:
    store = aiotp.SessionStore()
    store.create("shared")
    barrier = threading.Barrier(8)

    def bump() -> None:
        barrier.wait()
        for _ in range(5000):
            store.update("shared", lambda s: s.stats.__setitem__("n", s.stats.get("n", 0) + 1))

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("shared").stats["n"] == 40_000
