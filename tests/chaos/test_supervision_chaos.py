"""Supervision under chaos (hypothesis): random crashes in a random two-level tree.

Invariants, checked after every crash once the tree has settled:
- every live supervisor holds each of its children exactly once, in start order, all alive;
- no supervisor restarted more children than its intensity allows: one that would have had to
  exited with "shutdown", and its parent dealt with it (escalation), up to the top;
- the tree shuts down cleanly: no actor left once the top is stopped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiotp

pytestmark = pytest.mark.slow


class Leaf(aiotp.Actor):
    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        raise RuntimeError("chaos")


STRATEGIES = st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"])
SUBTREE = st.tuples(STRATEGIES, st.integers(0, 4), st.integers(1, 3))  # strategy, max, leaves


async def _walk(sup: aiotp.SupervisorRef) -> list[tuple[Any, aiotp.ActorRef | None]]:
    found = []
    for child in await sup.which_children():
        found.append((child.id, child.ref))
        if isinstance(child.ref, aiotp.SupervisorRef) and child.ref.alive:
            found.extend(await _walk(child.ref))
    return found


async def _settled(top: aiotp.SupervisorRef) -> bool:
    """True once every supervisor in the tree holds live children (or the top is gone)."""
    if not top.alive:
        return True
    try:
        entries = await _walk(top)
    except (aiotp.ActorExited, aiotp.NoProc):
        return False
    return all(ref is not None and ref.alive for _, ref in entries)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    top_strategy=STRATEGIES,
    top_max=st.integers(0, 4),
    subtrees=st.lists(SUBTREE, min_size=1, max_size=3),
    crashes=st.lists(st.integers(0, 100), max_size=10),
)
@pytest.mark.expect_errors("crashed", "restarts in")
def test_random_crashes_in_a_random_tree_keep_its_invariants(
    top_strategy: str, top_max: int, subtrees: list[tuple[str, int, int]], crashes: list[int]
) -> None:
    async def scenario(rt: aiotp.Runtime) -> None:
        restarted: collections.Counter[aiotp.ActorRef] = collections.Counter()
        limits: dict[aiotp.ActorRef, int] = {}

        def on_restart(event: Any, m: Any, md: Any) -> None:
            restarted[md["supervisor"]] += 1

        aiotp.telemetry.attach(
            "chaos-tree", ("aiotp", "supervisor", "child", "restarted"), on_restart
        )
        try:
            specs = [
                aiotp.ChildSpec(
                    f"sub{i}",
                    aiotp.Supervisor,
                    args=([aiotp.ChildSpec(f"leaf{i}.{j}", Leaf) for j in range(leaves)],),
                    kwargs={"strategy": strategy, "max_restarts": mx, "max_seconds": 60},
                    type="supervisor",
                )
                for i, (strategy, mx, leaves) in enumerate(subtrees)
            ]
            top = await rt.spawn(
                aiotp.Supervisor, specs, strategy=top_strategy, max_restarts=top_max, max_seconds=60
            )
            expected_ids = [s.id for s in specs]
            for pick in crashes:
                if not top.alive:
                    break
                entries = await _walk(top)
                for sid, ref in entries:
                    if isinstance(ref, aiotp.SupervisorRef) and ref not in limits:
                        limits[ref] = subtrees[int(str(sid)[3:])][1]
                leaves = [ref for sid, ref in entries if str(sid).startswith("leaf") and ref]
                victim = leaves[pick % len(leaves)]
                with contextlib.suppress(RuntimeError):
                    await victim.call("crash")
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while not await _settled(top):
                    assert loop.time() < deadline, "the tree did not settle"
                    await asyncio.sleep(0.001)
                if top.alive:
                    top_ids = [c.id for c in await top.which_children()]
                    assert top_ids == expected_ids  # each subtree once, in order
                    for _, ref in await _walk(top):
                        assert ref is not None and ref.alive
                    ids = [sid for sid, _ in await _walk(top)]
                    assert len(ids) == len(set(ids))
            # Intensity: no supervisor restarted more children than it was allowed to.
            for sup, count in restarted.items():
                if sup is top:
                    assert count <= top_max
                elif sup in limits:
                    assert count <= limits[sup]
                    if not sup.alive and top.alive:
                        assert sup.exit_reason == "shutdown"
            if top.alive:
                await rt.stop(top)
            else:
                assert top.exit_reason == "shutdown"  # escalated past the top
            assert rt.actors() == []
        finally:
            aiotp.telemetry.detach("chaos-tree")

    aiotp.run(scenario)
