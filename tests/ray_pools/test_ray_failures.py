"""profile="ray" under failure: actors killed mid-call, stuck lanes, pools stopped mid-call.

aiotp owns restarts (Ray's are off): the supervisor replaces a dead actor, the caller of a
request it held gets `WorkerCrashed` at once (not after its timeout), nothing else fails.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import ray
from ray_helpers import eventually, live_actors, no_actors_left, worker_ids

import aiotp

pytestmark = pytest.mark.usefixtures("ray_local")

ECHO = "ray_adapters:RayEcho"


def busy_worker(rt: aiotp.Runtime, pool: str) -> str | None:
    busy = [w.worker_id for w in rt.pool_stats(pool).workers if w.busy]
    return busy[0] if len(busy) == 1 else None


def kill_actor(rt: aiotp.Runtime, worker_id: str) -> None:
    ray.kill(ray.get_actor(worker_id, namespace=rt.name), no_restart=True)


async def test_actor_killed_mid_call_fails_its_caller_at_once_and_the_pool_heals(
    rt: aiotp.Runtime,
) -> None:
    await rt.start_pool("heal", ECHO, profile="ray", size=2, threads_per_worker=1)
    before = worker_ids(rt, "heal")
    # Its caller waits up to 120 s: WorkerCrashed must come from the death, not the clock.
    doomed = asyncio.create_task(rt.execute("heal", "sleep", {"seconds": 60}, timeout=120))
    victim = await eventually(lambda: busy_worker(rt, "heal"), "the call reached a worker")
    bystander = asyncio.create_task(rt.execute("heal", "sleep", {"seconds": 1.0}, timeout=60))
    await asyncio.sleep(0.2)
    kill_actor(rt, victim)
    with pytest.raises(aiotp.WorkerCrashed) as crashed:
        await doomed
    assert crashed.value.worker_id == victim
    assert await bystander == 1.0  # the other worker's request is untouched
    await eventually(
        lambda: rt.pool_stats("heal").live == 2 and victim not in worker_ids(rt, "heal"),
        "a replacement serves",
    )
    assert rt.pool_stats("heal").restarts == 1
    assert set(worker_ids(rt, "heal")) & set(before) == set(before) - {victim}
    assert {await rt.execute("heal", "twice", {"x": i}) for i in range(4)} == {0, 2, 4, 6}
    await eventually(lambda: victim not in live_actors(rt.name, "heal-"), "the dead actor is gone")


async def test_idempotent_tools_are_retried_after_a_crash_others_are_not(
    rt: aiotp.Runtime,
) -> None:
    await rt.start_pool(
        "retry", ECHO, profile="ray", size=1, retry=aiotp.Retry(attempts=3, backoff=0.2)
    )
    call = asyncio.create_task(
        rt.execute("retry", "slow_twice", {"x": 21, "seconds": 2.0}, timeout=60)
    )
    victim = await eventually(lambda: busy_worker(rt, "retry"), "the call reached the worker")
    await asyncio.sleep(0.2)
    kill_actor(rt, victim)
    assert await call == 42  # run again on the replacement
    assert rt.pool_stats("retry").retries >= 1
    plain = asyncio.create_task(rt.execute("retry", "sleep", {"seconds": 30}, timeout=60))
    victim = await eventually(lambda: busy_worker(rt, "retry"), "the call reached the worker")
    await asyncio.sleep(0.2)
    kill_actor(rt, victim)
    with pytest.raises(aiotp.WorkerCrashed):
        await plain


async def test_a_stream_whose_actor_dies_fails_with_worker_crashed(rt: aiotp.Runtime) -> None:
    await rt.start_pool("sdie", ECHO, profile="ray", size=1)
    items = rt.stream("sdie", "count", {"n": 1000, "delay": 0.01}, timeout=60)
    assert await anext(items) == 0
    kill_actor(rt, worker_ids(rt, "sdie")[0])
    with pytest.raises(aiotp.WorkerCrashed):
        async for _ in items:
            pass
    await eventually(lambda: rt.pool_stats("sdie").live == 1, "a replacement serves")


async def test_heartbeat_replaces_a_worker_whose_lane_is_stuck_not_a_paused_stream(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    beat = aiotp.Heartbeat(interval=0.2, timeout=1.0, max_missed=2)
    await rt.start_pool("beat", ECHO, profile="ray", size=1, heartbeat=beat)
    first = worker_ids(rt, "beat")
    # A stream paused by a slow consumer holds the only lane thread, yet is healthy.
    items = rt.stream("beat", "count", {"n": 10_000}, timeout=30)
    assert await anext(items) == 0
    await asyncio.sleep(2 * (beat.interval * beat.max_missed + beat.timeout))
    assert worker_ids(rt, "beat") == first
    assert await anext(items) == 1
    await items.aclose()
    await eventually(lambda: rt.pool_stats("beat").busy == 0, "the stream stopped")
    # A tool that never returns holds the lane: missed pings, the worker is replaced.
    with (
        caplog.at_level(logging.WARNING, logger="aiotp.pool"),
        pytest.raises(aiotp.WorkerCrashed),
    ):
        await rt.execute("beat", "sleep", {"seconds": 120}, timeout=120)
    assert any("heartbeat" in r.getMessage() for r in caplog.records)
    await eventually(
        lambda: rt.pool_stats("beat").live == 1 and worker_ids(rt, "beat") != first,
        "a replacement serves",
    )
    await eventually(lambda: first[0] not in live_actors(rt.name, "beat-"), "old actor gone")


async def test_heartbeat_keeps_a_worker_whose_only_lane_thread_awaits_an_async_tool(
    rt: aiotp.Runtime,
) -> None:
    # One lane thread, awaiting for several heartbeat windows: its event loop still answers,
    # so the worker is alive (as a process worker would be), not stuck.
    beat = aiotp.Heartbeat(interval=0.5, timeout=1.0, max_missed=2)
    await rt.start_pool("await", ECHO, profile="ray", size=1, threads_per_worker=1, heartbeat=beat)
    before = await rt.execute("await", "where", timeout=30)
    assert await rt.execute("await", "async_sleep", {"seconds": 5.0}, timeout=60) == "done"
    assert await rt.execute("await", "where", timeout=30) == before
    assert rt.pool_stats("await").restarts == 0


async def test_stopping_the_pool_mid_call_drains_then_kills(rt: aiotp.Runtime) -> None:
    await rt.start_pool("drain", ECHO, profile="ray", size=2, shutdown=10.0)
    calls = [
        asyncio.create_task(rt.execute("drain", "sleep", {"seconds": 0.5}, timeout=60))
        for _ in range(2)
    ]
    await eventually(lambda: rt.pool_stats("drain").busy == 2, "both workers busy")
    await rt.stop_pool("drain")
    assert [await c for c in calls] == [0.5, 0.5]  # within the grace: they finish
    await no_actors_left(rt.name, "drain-")

    await rt.start_pool("cut", ECHO, profile="ray", size=2, shutdown=0.3)
    calls = [
        asyncio.create_task(rt.execute("cut", "sleep", {"seconds": 30}, timeout=60))
        for _ in range(3)
    ]
    await eventually(lambda: rt.pool_stats("cut").busy == 2, "both workers busy")
    await rt.stop_pool("cut")
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    # Every call ends, each with a typed error: the two running ones lost their worker, the
    # queued one its pool.
    assert all(isinstance(o, aiotp.WorkerCrashed | aiotp.PoolBusy) for o in outcomes), outcomes
    assert sum(isinstance(o, aiotp.WorkerCrashed) for o in outcomes) == 2
    await no_actors_left(rt.name, "cut-")


async def test_an_idle_worker_whose_actor_dies_is_replaced_without_any_request(
    rt: aiotp.Runtime,
) -> None:
    # No request in flight and no heartbeat: only the watch call sees this death.
    await rt.start_pool("idle", ECHO, profile="ray", size=1, heartbeat=None)
    (victim,) = worker_ids(rt, "idle")
    kill_actor(rt, victim)
    await eventually(
        lambda: rt.pool_stats("idle").live == 1 and worker_ids(rt, "idle") != [victim],
        "the dead idle worker replaced",
    )
    assert rt.pool_stats("idle").restarts == 1
    assert await rt.execute("idle", "twice", {"x": 3}) == 6
