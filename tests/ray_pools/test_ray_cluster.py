"""profile="ray" on a (simulated) multi-node cluster: workers spread over nodes, a node lost
under load, the pool healing on the nodes that remain.

`ray.cluster_utils.Cluster` runs a head and two more nodes (custom resources "node_a" and
"node_b" tell them apart) as local processes on 127.0.0.1: real raylets, real node death.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from procs import descendants
from ray_helpers import (
    RAY_EXIT_DEADLINE,
    cmdline,
    eventually,
    no_actors_left,
    wait_processes_gone,
)

import aiotp

ECHO = "ray_adapters:RayEcho"
SIZE = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    before = set(descendants())
    # Fast node-death detection: GCS health checks every 0.5 s, dead after 3 misses.
    system = {
        "health_check_period_ms": 500,
        "health_check_failure_threshold": 3,
        "health_check_initial_delay_ms": 0,
    }
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": system},
    )
    try:
        c.node_a = c.add_node(num_cpus=1, resources={"node_a": 1})
        c.add_node(num_cpus=1, resources={"node_b": 1})
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        left = wait_processes_gone(before, time.monotonic() + RAY_EXIT_DEADLINE)
        assert not left, f"the cluster left processes: {[(p, cmdline(p)) for p in left]}"


def node_with(resource: str) -> str:
    (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"]]
    return str(node)


async def nodes_of_workers(rt: aiotp.Runtime) -> dict[str, str]:
    """Each worker's node, asked of the workers themselves: SIZE concurrent calls that each
    hold a worker for a moment land on SIZE different workers."""
    slots = await asyncio.gather(
        *(rt.execute("spread", "slow_twice", {"x": 0, "seconds": 0.01}) for _ in range(SIZE))
    )
    assert slots == [0] * SIZE
    where: dict[str, str] = {}
    for _ in range(20):  # least-loaded dispatch: a few rounds reach every worker
        seen = await asyncio.gather(*(rt.execute("spread", "where") for _ in range(SIZE)))
        where.update({w["actor"]: w["node"] for w in seen})
        if len(where) >= SIZE:
            break
    return where


async def test_workers_spread_over_nodes_and_heal_when_a_node_is_lost(cluster: Any) -> None:
    node_a, node_b = node_with("node_a"), node_with("node_b")
    async with aiotp.Runtime(name="aiotp-cluster", shutdown_timeout=5.0) as rt:
        await rt.start_pool(
            "spread",
            ECHO,
            profile="ray",
            size=SIZE,
            # Ray's SPREAD spreads evenly only actors that ask for resources (it placed two of
            # three default actors on one node): half a CPU each, one CPU per node.
            ray_options={"num_cpus": 0.5, "scheduling_strategy": "SPREAD"},
        )
        where = await nodes_of_workers(rt)
        assert sorted(where) == sorted(w.worker_id for w in rt.pool_stats("spread").workers)
        assert len(set(where.values())) == SIZE, where  # one worker per node
        on_a = [w for w, n in where.items() if n == node_a]
        assert len(on_a) == 1

        # Load on every worker, then node_a goes away (its raylet and workers SIGKILLed).
        calls = [
            asyncio.create_task(rt.execute("spread", "sleep", {"seconds": 2.0}, timeout=60))
            for _ in range(2 * SIZE)
        ]
        await eventually(lambda: rt.pool_stats("spread").busy == SIZE, "every worker busy")
        cluster.remove_node(cluster.node_a, allow_graceful=False)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(o == 2.0 or isinstance(o, aiotp.WorkerCrashed) for o in outcomes), outcomes
        assert any(isinstance(o, aiotp.WorkerCrashed) for o in outcomes)  # node_a's in flight
        assert sum(o == 2.0 for o in outcomes) >= 2 * SIZE - 1  # the others' all ran

        # The pool heals on the nodes that remain, within its restart intensity.
        await eventually(
            lambda: (
                rt.pool_stats("spread").live == SIZE
                and on_a[0] not in {w.worker_id for w in rt.pool_stats("spread").workers}
            ),
            "the lost worker replaced",
        )
        assert rt.pool_stats("spread").restarts >= 1
        where = await nodes_of_workers(rt)
        assert set(where.values()) <= {node_with("node:__internal_head__"), node_b}, where
        await rt.stop_pool("spread")
        await no_actors_left("aiotp-cluster", "spread-")
