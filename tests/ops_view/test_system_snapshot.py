"""rt.snapshot(): its shape, and that it is safe at any moment (crashes, restarts, shutdown)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until

import aiotp

ECHO = "pool_adapters:Echo"  # tests/workers, on the workers' PYTHONPATH (tests/conftest.py)


class Counter(aiotp.Actor):
    async def init(self) -> None:
        self.n = 0

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> int:
        return self.n

    async def handle_cast(self, msg: Any) -> None:
        if msg == "quit":
            self.stop("quit")  # abnormal for a permanent child: restarted, and no ERROR log
        else:
            self.n += msg


def walk(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from walk(node["children"])


def check(snap: Any, rt: aiotp.Runtime) -> dict[str, Any]:
    """What holds for every snapshot: strict JSON, every live actor exactly once."""
    decoded: dict[str, Any] = json.loads(json.dumps(snap, allow_nan=False))
    assert decoded == snap
    ids = [n["id"] for n in walk(decoded["tree"]) if n["state"] != "DOWN"]
    assert len(ids) == len(set(ids)), "an actor appears twice"
    assert set(ids) == {ref.id for ref in rt.actors()}
    assert decoded["actors"] == len(ids)
    return decoded


async def test_snapshot_names_the_tree_the_pools_and_the_sessions(rt: aiotp.Runtime) -> None:
    await rt.spawn(
        aiotp.Supervisor,
        [
            aiotp.ChildSpec("counter", Counter, name="counter"),
            aiotp.pool_spec("ml", ECHO, profile="process", size=2),
        ],
        name="app",
    )
    loose = await rt.spawn(Counter)
    rt.sessions.create("s1")
    rt.sessions.create("s2")
    rt.sessions.transition("s2", "running")
    assert await rt.execute("ml", "echo", {"value": 1}) == 1
    with pytest.raises(aiotp.ToolError):
        await rt.execute("ml", "crash", {"message": "on purpose"})
    first = rt.whereis("counter")
    await rt.cast("counter", "quit")
    await wait_until(lambda: rt.whereis("counter") not in (None, first), 5.0)

    snap = check(rt.snapshot(), rt)

    assert (snap["version"], snap["name"], snap["state"]) == (1, rt.name, "RUNNING")
    assert snap["pid"] == os.getpid() and snap["host"] == socket.gethostname()
    assert snap["uptime"] >= 0
    app, free = snap["tree"]
    assert (app["name"], app["class"], app["supervisor"], app["restarts"]) == (
        "app",
        "Supervisor",
        True,
        None,
    )
    assert (free["id"], free["class"], free["restarts"], free["children"]) == (
        loose.id,
        "Counter",
        None,
        [],
    )
    counter, pool = app["children"]
    assert (counter["name"], counter["child_id"], counter["state"]) == (
        "counter",
        "counter",
        "RUNNING",
    )
    assert counter["restarts"] == 1 and counter["mailbox"] == 0 and counter["uptime"] >= 0
    assert (pool["class"], pool["child_id"], pool["name"]) == (
        "PoolSupervisor",
        "ml",
        "('aiotp.pool', 'ml')",
    )
    workers_sup = pool["children"][0]
    assert [w["class"] for w in workers_sup["children"]] == ["WorkerActor", "WorkerActor"]
    # A worker's heartbeat monitor is no supervisor's child: it hangs under the worker that
    # spawned it (link=True), not at the top level.
    assert [c["class"] for c in workers_sup["children"][0]["children"]] == ["HeartbeatMonitor"]

    (ml,) = snap["pools"]
    assert (ml["name"], ml["profile"], ml["size"], ml["live"]) == ("ml", "process", 2, 2)
    assert (ml["requests"], ml["errors"], ml["restarts"]) == (2, 1, 0)
    assert ml["latency"]["count"] == 2 and ml["latency"]["p50"] > 0
    pids = {w.pid for w in rt.pool_stats("ml").workers}
    assert {w["pid"] for w in ml["workers"]} == pids and None not in pids
    for w in ml["workers"]:
        assert w["node"] == socket.gethostname() and w["state"] == "serving"
        assert set(w) >= {"worker_id", "busy", "requests", "errors", "pinned_sessions", "uptime"}

    sessions = snap["sessions"]
    assert (sessions["current"], sessions["created"]) == (2, 2)
    assert sessions["by_state"]["pending"] == 1 and sessions["by_state"]["running"] == 1


async def test_snapshot_of_a_runtime_that_never_started_and_of_one_without_pools() -> None:
    fresh = aiotp.Runtime(name="fresh")
    snap = fresh.snapshot()
    assert (snap["name"], snap["state"], snap["uptime"], snap["tree"]) == ("fresh", "NEW", None, [])
    assert snap["pools"] == [] and snap["sessions"] is None
    async with aiotp.Runtime() as rt:
        snap = rt.snapshot()
        # Looking creates nothing: no pools' registry, no default session store.
        assert snap["pools"] == [] and snap["sessions"] is None
        assert "aiotp.pools" not in rt._extensions and "aiotp.sessions" not in rt._extensions
    assert rt.snapshot()["state"] == "STOPPED"


async def test_snapshot_is_safe_while_workers_die_and_actors_restart_and_during_shutdown() -> None:
    rt = aiotp.Runtime(shutdown_timeout=3.0)
    await rt.__aenter__()
    try:
        await rt.spawn(
            aiotp.Supervisor,
            [
                aiotp.ChildSpec("counter", Counter, name="counter"),
                aiotp.pool_spec("ml", ECHO, profile="process", size=3),
            ],
            strategy="one_for_one",
            max_restarts=50,
            name="app",
        )
        kills = 5

        async def chaos() -> None:
            for round_ in range(1, kills + 1):
                victim = rt.pool_stats("ml").workers[round_ % 3].pid
                assert victim is not None
                os.kill(victim, signal.SIGKILL)
                old = rt.whereis("counter")
                await rt.cast("counter", "quit")

                def recovered(r: int = round_, old: Any = old) -> bool:
                    stats = rt.pool_stats("ml")
                    return (
                        stats.restarts >= r
                        and stats.live == 3
                        and rt.whereis("counter") not in (None, old)
                    )

                await wait_until(recovered, 30.0)

        seen = 0
        task = asyncio.create_task(chaos())
        while not task.done():
            check(rt.snapshot(), rt)
            seen += 1
            await asyncio.sleep(0)
        await task
        snap = check(rt.snapshot(), rt)
        assert snap["pools"][0]["restarts"] == kills
        restarts = {n["child_id"]: n["restarts"] for n in walk(snap["tree"]) if n["child_id"]}
        assert restarts["counter"] == kills
        assert seen > kills

        during = 0
        stopping = asyncio.create_task(rt.shutdown())
        while not stopping.done():
            check(rt.snapshot(), rt)
            during += 1
            await asyncio.sleep(0)
        await stopping
        assert during > 0
    finally:
        await rt.shutdown()
    last = check(rt.snapshot(), rt)
    assert (last["state"], last["tree"], last["pools"]) == ("STOPPED", [], [])


class AsyncStore:
    """A session store that answers by coroutine, as the Redis store does (its protocol: the
    runtime runs `sweep_forever` and `stop`s it; the snapshot reads `stats`, `count_by_state`).
    `hang=True` is a backend that never answers."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang

    async def stats(self) -> aiotp.StoreStats:
        if self.hang:
            await asyncio.Event().wait()
        return aiotp.StoreStats(
            current_sessions=3,
            sessions_created=5,
            sessions_deleted=1,
            sessions_expired=1,
            sessions_gc=0,
            cleanup_runs=2,
            max_sessions=100,
            memory=0,
        )

    async def count_by_state(self) -> dict[str, int]:
        return {"pending": 1, "running": 2}

    async def sweep_forever(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        return None


async def test_a_store_that_must_be_awaited_is_read_by_snapshot_async_within_a_bound() -> None:
    from aiotp.ops.snapshot import NEEDS_AWAIT, snapshot_async

    async with aiotp.Runtime(sessions=AsyncStore()) as rt:
        assert rt.snapshot()["sessions"] == {"error": NEEDS_AWAIT}  # and no coroutine left
        sessions = (await snapshot_async(rt))["sessions"]
        assert sessions == {
            "current": 3,
            "max": 100,
            "created": 5,
            "deleted": 1,
            "expired": 1,
            "gc": 0,
            "by_state": {"pending": 1, "running": 2},
        }
    async with aiotp.Runtime(sessions=AsyncStore(hang=True)) as rt:
        snap = await snapshot_async(rt, sessions_timeout=0.05)
        assert snap["sessions"] == {"error": "the session store did not answer within 0.05 s"}
        assert snap["state"] == "RUNNING"  # the rest of the picture is there


async def test_max_children_lists_the_first_children_and_counts_the_rest(
    rt: aiotp.Runtime,
) -> None:
    dyn = await rt.spawn(aiotp.DynamicSupervisor, name="many")
    for _ in range(30):
        await dyn.start_child(aiotp.ChildSpec("c", Counter))
    for _ in range(4):
        await rt.spawn(Counter)
    full = check(rt.snapshot(), rt)
    assert len(full["tree"][0]["children"]) == 30 and "more" not in full["tree"][0]
    assert "tree_more" not in full

    cut = rt.snapshot(max_children=3)
    json.dumps(cut, allow_nan=False)
    assert cut["actors"] == full["actors"] == 35
    assert len(cut["tree"]) == 3 and cut["tree_more"] == {"count": 2, "restarts": 0, "down": 0}
    many = cut["tree"][0]
    assert len(many["children"]) == 3
    assert many["more"] == {"count": 27, "restarts": 0, "down": 0}
    with pytest.raises(ValueError, match="max_children"):
        rt.snapshot(max_children=0)
