"""Two runtimes (two app instances) with one name share a Redis session store and a Ray
namespace: a session pinned to one runtime's Ray worker is served on that worker by the other
runtime too (its WorkerSession state goes on), and when that worker dies under the other
runtime's request, the session is told it is lost (strict) and is placed anew after. The owner
stopping its pool gives the other runtime's request in flight there the pool's grace."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import aiotp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "session_redis"))
from ray_helpers import eventually
from redis_server import RedisServer, require_redis

pytestmark = pytest.mark.usefixtures("ray_local")
ADAPTER = "ray_adapters:RayEcho"


@pytest.fixture(scope="module", autouse=True)
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis()
    server = RedisServer.start(tmp_path_factory.mktemp("redis-guests"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def two_instances(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[aiotp.Runtime, aiotp.Runtime]]:
    prefix = f"guests-{request.node.name}"
    a_store = aiotp.RedisSessionStore(redis_server.url, prefix=prefix)
    b_store = aiotp.RedisSessionStore(redis_server.url, prefix=prefix)
    async with aiotp.Runtime(name="shop", sessions=a_store) as a, aiotp.Runtime(
        name="shop", sessions=b_store
    ) as b:
        for rt in (a, b):
            await rt.start_pool("ml", ADAPTER, profile="ray", size=1, affinity="strict_queue")
        yield a, b


async def _remember(rt: aiotp.Runtime, value: int) -> Any:
    old, _settings = await rt.execute(
        "ml", "remember", {"key": "k", "value": value}, session="s1", timeout=30.0
    )
    return old


async def _where(rt: aiotp.Runtime) -> Any:
    return await rt.execute("ml", "where", {}, session="s1", timeout=30.0)


async def test_the_other_instance_serves_the_session_on_its_worker(
    two_instances: tuple[aiotp.Runtime, aiotp.Runtime],
) -> None:
    a, b = two_instances
    assert await _remember(a, 1) is None  # placed on A's worker
    home = await _where(a)
    assert await _remember(b, 2) == 1  # B reached A's worker: the state is there
    assert await _where(b) == home
    assert await _remember(a, 3) == 2
    assert await _remember(b, 4) == 3
    # B's own worker never saw the session.
    assert b.pool_stats("ml").workers[0].pinned_sessions == 0


async def test_the_workers_death_under_the_other_instance_loses_the_session_once(
    two_instances: tuple[aiotp.Runtime, aiotp.Runtime],
) -> None:
    import ray

    a, b = two_instances
    await _remember(a, 1)
    home = await _where(a)
    slow = asyncio.ensure_future(
        b.execute("ml", "sleep", {"seconds": 30.0}, session="s1", timeout=60.0)
    )
    await asyncio.sleep(0.5)  # B's request is running on A's worker
    ray.kill(ray.get_actor(home["actor"], namespace="shop"), no_restart=True)
    with pytest.raises(aiotp.SessionWorkerLost):
        await asyncio.wait_for(slow, 30.0)
    # Told once: the next request places the session anew, with empty state.
    assert await _remember(b, 5) is None
    assert (await _where(b))["actor"] != home["actor"]


@pytest.mark.parametrize("mode", ["strict_queue", "hint"])
async def test_a_stream_of_the_session_also_runs_on_its_worker(
    two_instances: tuple[aiotp.Runtime, aiotp.Runtime], mode: str
) -> None:
    a, b = two_instances
    assert await _remember(a, 1) is None
    home = await _where(a)
    items = [
        item
        async for item in b.stream(
            "ml",
            "remember_each",
            {"key": "k", "values": [2, 3]},
            session="s1",
            timeout=30.0,
            affinity=mode,  # type: ignore[arg-type]
        )
    ]
    assert items == [1, 2]  # the state was there, and the stream moved it on
    assert await _remember(a, 4) == 3  # and A still finds it on its worker
    assert await _where(b) == home


async def test_a_caller_deadline_while_attaching_is_a_call_timeout(
    two_instances: tuple[aiotp.Runtime, aiotp.Runtime],
) -> None:
    a, b = two_instances
    await _remember(a, 1)
    with pytest.raises(aiotp.CallTimeout):
        await b.execute("ml", "remember", {"key": "k", "value": 2}, session="s1", timeout=0.003)
    # Nothing was lost: the pin and the state are where they were.
    assert await _remember(b, 3) == 1


async def test_the_owner_stopping_its_pool_lets_the_other_instances_request_finish(
    two_instances: tuple[aiotp.Runtime, aiotp.Runtime], tmp_path: Path
) -> None:
    a, b = two_instances
    await _remember(a, 1)  # pinned to A's worker
    started = tmp_path / "started"
    slow = asyncio.ensure_future(
        b.execute(
            "ml",
            "sleep_marked",
            {"path": str(started), "seconds": 2.0},
            session="s1",
            timeout=60.0,
        )
    )
    await eventually(started.exists, "B's request runs on A's worker")
    # A's handle holds no request of its own: only the actor knows B's is running. It gets
    # the pool's shutdown grace (5 s) before teardown and the kill.
    await a.stop_pool("ml")
    assert await asyncio.wait_for(slow, 30.0) == 2.0
