"""profile="ray": the pool contract of the other profiles, with workers as Ray actors.

One local Ray per module (conftest.ray_local); each test starts its own pool of 1-2 actors.
"""

from __future__ import annotations

import asyncio

import pytest
import ray
from ray_helpers import eventually, live_actors, no_actors_left, serving, worker_ids

import aiotp
from aiotp.workers.credit import WINDOW

pytestmark = pytest.mark.usefixtures("ray_local")

ECHO = "ray_adapters:RayEcho"


async def test_execute_results_and_typed_errors(rt: aiotp.Runtime) -> None:
    await rt.start_pool("basic", ECHO, profile="ray", size=1)
    value = {"a": [1, 2.5, "x", None, True, b"raw"], "n": -3}
    assert await rt.execute("basic", "echo", {"value": value}) == value
    with pytest.raises(aiotp.ToolError) as err:
        await rt.execute("basic", "crash", {"message": "bad input"})
    assert (err.value.type_name, err.value.message) == ("ValueError", "bad input")
    assert "raise ValueError(message)" in err.value.traceback
    with pytest.raises(aiotp.UnknownTool) as unknown:
        await rt.execute("basic", "nope")
    assert "echo" in unknown.value.available
    # A tool's SystemExit is the caller's error, not the end of the actor.
    with pytest.raises(aiotp.ToolError, match="SystemExit"):
        await rt.execute("basic", "exit_tool")
    with pytest.raises(aiotp.ToolError, match="SerializationError"):
        await rt.execute("basic", "unpackable")
    assert await rt.execute("basic", "twice", {"x": 21}) == 42
    stats = rt.pool_stats("basic")
    assert (stats.profile, stats.live, stats.restarts) == ("ray", 1, 0)


async def test_arguments_msgpack_cannot_carry_are_refused_before_sending(
    rt: aiotp.Runtime,
) -> None:
    await rt.start_pool("ser", ECHO, profile="ray", size=1, max_frame=4096)
    with pytest.raises(aiotp.SerializationError, match="args\\['value'\\]"):
        await rt.execute("ser", "echo", {"value": object()})
    with pytest.raises(aiotp.SerializationError, match="max_frame"):
        await rt.execute("ser", "echo", {"value": "x" * 10_000})
    with pytest.raises(aiotp.SerializationError):
        async for _ in rt.stream("ser", "count", {"n": {1, 2}}):
            pass
    # Nothing reached the actor: it saw no call at all.
    assert await rt.execute("ser", "calls_seen") == 0


async def test_workers_are_named_actors_in_the_runtime_namespace(rt: aiotp.Runtime) -> None:
    await rt.start_pool("named", ECHO, profile="ray", size=2)
    ids = worker_ids(rt, "named")
    assert live_actors(rt.name, "named-") == ids
    for worker_id in ids:
        actor = ray.get_actor(worker_id, namespace=rt.name)  # what another app instance does
        assert actor is not None
    seen = {(await rt.execute("named", "where"))["actor"] for _ in range(6)}
    assert seen <= set(ids)
    await rt.stop_pool("named")
    await no_actors_left(rt.name, "named-")


async def test_ray_options_reach_ray(rt: aiotp.Runtime) -> None:
    await rt.start_pool("opts", ECHO, profile="ray", size=1, ray_options={"num_cpus": 1})
    assert (await rt.execute("opts", "assigned")).get("CPU") == 1.0


@pytest.mark.expect_errors("failed to start")
async def test_a_worker_ray_cannot_place_is_a_start_error_and_leaves_nothing(
    rt: aiotp.Runtime,
) -> None:
    with pytest.raises(aiotp.WorkerStartError, match="start_timeout") as err:
        await rt.start_pool(
            "nowhere",
            ECHO,
            profile="ray",
            size=1,
            start_timeout=1.0,
            ray_options={"resources": {"no_such_resource": 1}},
        )
    assert err.value.worker_id is not None and err.value.worker_id.startswith("nowhere-")
    await no_actors_left(rt.name, "nowhere-")


@pytest.mark.expect_errors("failed to start")
async def test_setup_failure_is_a_start_error_naming_the_cause(rt: aiotp.Runtime) -> None:
    with pytest.raises(aiotp.WorkerStartError, match="no model file") as err:
        await rt.start_pool("badsetup", "ray_adapters:FailingSetup", profile="ray", size=1)
    assert "RuntimeError" in err.value.stderr  # the remote traceback
    await no_actors_left(rt.name, "badsetup-")


@pytest.mark.expect_errors("failed to start")
async def test_garbage_adapter_paths_and_options_ray_refuses_are_start_errors(
    rt: aiotp.Runtime,
) -> None:
    with pytest.raises(aiotp.WorkerStartError, match="Ray refused"):
        await rt.start_pool(
            "refused", ECHO, profile="ray", size=1, ray_options={"scheduling_strategy": "NOPE"}
        )
    with pytest.raises(aiotp.WorkerStartError, match="no_such_module"):
        await rt.start_pool("nomod", "no_such_module:Adapter", profile="ray", size=1)
    await no_actors_left(rt.name, "refused-")
    await no_actors_left(rt.name, "nomod-")


@pytest.mark.expect_errors("failed to start")
async def test_a_pool_asking_for_another_cluster_is_a_start_error(rt: aiotp.Runtime) -> None:
    # This process is connected to the module's local Ray: Ray is one per process, so a pool
    # naming another cluster must not run there silently.
    await rt.start_pool("here", ECHO, profile="ray", size=1)
    gcs = ray.get_runtime_context().gcs_address
    with pytest.raises(aiotp.WorkerStartError) as err:
        await rt.start_pool(
            "far", ECHO, profile="ray", size=1, address="10.255.255.1:6379", start_timeout=2.0
        )
    assert "10.255.255.1:6379" in str(err.value) and gcs in str(err.value)
    assert live_actors(rt.name, "far-") == []
    # Naming the cluster it is connected to (its GCS address) is fine.
    await rt.start_pool("same", ECHO, profile="ray", size=1, address=gcs)
    assert await rt.execute("same", "twice", {"x": 2}) == 4


def test_bad_ray_settings_are_refused_with_typed_errors() -> None:
    with pytest.raises(ValueError, match="profile='ray' only"):
        aiotp.pool_spec("p", ECHO, profile="thread", ray_options={"num_cpus": 1})
    with pytest.raises(ValueError, match="profile='ray' only"):
        aiotp.pool_spec("p", ECHO, profile="process", address="127.0.0.1:6379")
    with pytest.raises(ValueError, match="max_restarts"):
        aiotp.pool_spec("p", ECHO, profile="ray", ray_options={"max_restarts": 3})
    with pytest.raises(ValueError, match="num_gpus"):
        aiotp.pool_spec("p", ECHO, profile="ray", ray_options={"num_gpus": -1})
    with pytest.raises(TypeError, match="resources"):
        aiotp.pool_spec("p", ECHO, profile="ray", ray_options={"resources": ["gpu"]})
    with pytest.raises(TypeError, match="mapping"):
        aiotp.pool_spec("p", ECHO, profile="ray", ray_options=[("num_cpus", 1)])
    with pytest.raises(ValueError, match="max_memory_mb"):
        aiotp.pool_spec("p", ECHO, profile="ray", max_memory_mb=100)
    with pytest.raises(TypeError, match="address"):
        aiotp.pool_spec("p", ECHO, profile="ray", address=6379)


async def test_streams_keep_the_credit_window_and_stop_when_the_caller_leaves(
    rt: aiotp.Runtime,
) -> None:
    # Two lane threads: one streams, the other answers `stats` meanwhile.
    await rt.start_pool("flow", ECHO, profile="ray", size=1, threads_per_worker=2)
    items = rt.stream("flow", "count", {"n": 100_000}, timeout=10.0)
    taken = [await anext(items) for _ in range(5)]
    assert taken == [0, 1, 2, 3, 4]

    async def produced() -> int:
        return int((await rt.execute("flow", "stats"))["produced"])

    # The producer runs until it has spent its window, then waits for credit.
    end = asyncio.get_running_loop().time() + 30.0
    while await produced() < WINDOW and asyncio.get_running_loop().time() < end:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # had it ignored the window it would be far beyond it by now
    assert await produced() == WINDOW
    await items.aclose()  # leave early: the generator is closed in the actor
    await eventually(
        lambda: rt.pool_stats("flow").busy == 0, "the worker freed once the stream stopped"
    )
    assert (await rt.execute("flow", "stats"))["closed"] == 1
    # A full stream, an async generator, a stream that fails, a non-generator streamed.
    assert [i async for i in rt.stream("flow", "count", {"n": 300})] == list(range(300))
    assert [i async for i in rt.stream("flow", "acount", {"n": 3})] == [0, 1, 2]
    got: list[int] = []
    with pytest.raises(aiotp.ToolError, match="KeyError"):
        async for i in rt.stream("flow", "failing_stream", {"n": 3}):
            got.append(i)
    assert got == [0, 1, 2]
    assert [i async for i in rt.stream("flow", "echo", {"value": 7})] == [7]
    assert await rt.execute("flow", "count", {"n": 4}) == [0, 1, 2, 3]


async def test_timed_out_call_keeps_its_worker_busy_until_the_tool_ends(
    rt: aiotp.Runtime,
) -> None:
    await rt.start_pool("slow", ECHO, profile="ray", size=1, cancel_grace=30.0)
    with pytest.raises(aiotp.CallTimeout):
        await rt.execute("slow", "sleep", {"seconds": 1.0}, timeout=0.2)
    assert rt.pool_stats("slow").busy == 1  # the actor still runs it
    await eventually(lambda: rt.pool_stats("slow").busy == 0, "the tool ended")
    assert await rt.execute("slow", "echo", {"value": 1}) == 1
    assert rt.pool_stats("slow").restarts == 0


async def test_cancelled_caller_cancels_an_async_tool_in_the_actor(rt: aiotp.Runtime) -> None:
    await rt.start_pool("cancel", ECHO, profile="ray", size=1, threads_per_worker=2)
    call = asyncio.create_task(rt.execute("cancel", "async_sleep", {"seconds": 60}, timeout=90))
    await eventually(lambda: rt.pool_stats("cancel").busy == 1, "the call reached the worker")
    await asyncio.sleep(0.3)  # let the actor start the tool's task
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: rt.pool_stats("cancel").busy == 0, "the async tool was cancelled")
    assert (await rt.execute("cancel", "stats"))["closed"] == 1


async def test_non_thread_safe_adapter_is_never_entered_twice(rt: aiotp.Runtime) -> None:
    await rt.start_pool(
        "serial", "ray_adapters:SerialAdapter", profile="ray", size=1, threads_per_worker=3
    )
    assert rt.pool_stats("serial").capacity == 1
    results = await asyncio.gather(
        *(rt.execute("serial", "enter", {"seconds": 0.1}, timeout=30) for _ in range(4))
    )
    assert max(results) == 1


async def test_session_state_lives_in_the_actor_and_is_lost_with_it(rt: aiotp.Runtime) -> None:
    await rt.start_pool(
        "sess", ECHO, profile="ray", size=2, affinity="strict_queue", heartbeat=None
    )
    rt.sessions.create("user-1", metadata={"depth": 5})
    assert await rt.execute("sess", "remember", {"key": "k", "value": 1}, session="user-1") == [
        None,
        {"depth": 5},
    ]
    assert (await rt.execute("sess", "remember", {"key": "k", "value": 2}, session="user-1"))[
        0
    ] == 1
    pinned = rt.sessions.get("user-1").affinity["sess"]
    ray.kill(ray.get_actor(pinned, namespace=rt.name))  # the pinned worker's node, say, died
    with pytest.raises(aiotp.SessionWorkerLost):
        await eventually_raises(rt, "sess", "user-1")
    # The next call re-pins to a live worker, with empty state.
    first = await rt.execute(
        "sess", "remember", {"key": "k", "value": 3}, session="user-1", timeout=30
    )
    assert first[0] is None


async def eventually_raises(rt: aiotp.Runtime, pool: str, session: str) -> None:
    """Call the session until the pool learns its worker died (the kill is asynchronous)."""
    for _ in range(600):
        await rt.execute(pool, "remember", {"key": "k", "value": 0}, session=session, timeout=30)
        await asyncio.sleep(0.05)


async def test_pool_spec_runs_ray_workers_in_a_supervision_tree(rt: aiotp.Runtime) -> None:
    sup = await rt.spawn(
        aiotp.Supervisor, [aiotp.pool_spec("tree", ECHO, profile="ray", size=1)], name="raysup"
    )
    assert await rt.execute("tree", "twice", {"x": 2}) == 4
    await rt.stop(sup, "shutdown")
    await no_actors_left(rt.name, "tree-")


async def test_runtime_exit_stops_every_actor_of_its_pools() -> None:
    async with aiotp.Runtime(name="aiotp-exit", shutdown_timeout=5.0) as rt:
        await rt.start_pool("gone", ECHO, profile="ray", size=2)
        assert len(live_actors("aiotp-exit", "gone-")) == 2
    assert ray.is_initialized()  # the fixture's Ray is not aiotp's to stop
    await no_actors_left("aiotp-exit", "gone-")


async def test_recycling_by_max_requests_and_ttl_replaces_actors(rt: aiotp.Runtime) -> None:
    await rt.start_pool("worn", ECHO, profile="ray", size=1, max_requests=3)
    first = worker_ids(rt, "worn")
    names = {(await rt.execute("worn", "where", timeout=30))["actor"] for _ in range(7)}
    assert len(names) >= 3  # 7 requests, at most 3 per worker
    await eventually(lambda: serving(rt, "worn") != first, "a replacement serves")
    await eventually(
        lambda: first[0] not in live_actors(rt.name, "worn-"), "the worn actor was stopped"
    )
    await rt.start_pool("aged", ECHO, profile="ray", size=1, ttl=0.5)
    old = worker_ids(rt, "aged")
    await eventually(lambda: serving(rt, "aged") and serving(rt, "aged") != old, "ttl recycled")
    assert rt.pool_stats("aged").restarts == 0  # recycled, not crashed
