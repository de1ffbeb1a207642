"""Hypothesis: random crashes never leave a supervisor with a child missing or duplicated,
unless the restart intensity was exceeded (and then the whole tree is gone)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from children import spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiotp


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
    restarts=st.sampled_from(["permanent", "transient", "temporary"]),
    max_restarts=st.integers(0, 6),
    crashes=st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=12),
)
@pytest.mark.expect_errors("crashed", "restarts in")
def test_random_crashes_keep_the_tree_whole(
    strategy: str, restarts: str, max_restarts: int, crashes: list[tuple[int, bool]]
) -> None:
    async def scenario(rt: aiotp.Runtime) -> None:
        log: list[Any] = []
        names = ["a", "b", "c", "d"]
        specs = [spec(n, log) for n in names[:3]]
        specs.append(spec("d", log, restart=restarts))
        sup = await rt.spawn(
            aiotp.Supervisor, specs, strategy=strategy, max_restarts=max_restarts, max_seconds=60
        )
        restarts_done = 0
        for index, normal in crashes:
            children = await sup.which_children()
            running = [c for c in children if c.ref is not None]
            if not running:
                break
            victim = running[index % len(running)]
            assert victim.ref is not None
            if normal:
                await victim.ref.call("exit_normal")
            else:
                with contextlib.suppress(RuntimeError):
                    await victim.ref.call("crash")
            while victim.ref.alive:
                await asyncio.sleep(0)
            wants_restart = victim.restart == "permanent" or (
                victim.restart == "transient" and not normal
            )
            try:
                children = await sup.which_children()
            except (aiotp.ActorExited, aiotp.NoProc):
                children = None
            if wants_restart:
                restarts_done += 1
            if restarts_done > max_restarts:
                # Intensity exceeded: the supervisor must be gone, with every child.
                await rt._wait_gone(sup, 5)
                assert sup.exit_reason == "shutdown"
                assert all(not r.alive for r in rt.actors())
                return
            assert children is not None, "supervisor died without exceeding its intensity"
            ids = [c.id for c in children]
            assert len(ids) == len(set(ids)), f"duplicated child: {ids}"
            assert ids == [i for i in names if i in ids], f"order lost: {ids}"
            # Permanent and transient children are never missing; only a temporary one may go.
            assert {"a", "b", "c"} <= set(ids), f"missing child: {ids}"
            if restarts != "temporary":
                assert "d" in ids, f"missing child: {ids}"
            live_refs = [c.ref for c in children if c.ref is not None]
            assert len(live_refs) == len(set(live_refs))
            for c in children:
                if c.ref is None:  # only a transient child that ended normally may be down
                    assert c.restart == "transient"
                else:
                    assert c.ref.alive
        await rt.stop(sup)

    aiotp.run(scenario)
