"""Helpers of the Ray pool tests: polling with deadlines, reading Ray's view of our actors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import ray
from procs import descendants

import aiotp

#: Seconds Ray gets to end its processes after `ray.shutdown()` / `Cluster.shutdown()`.
RAY_EXIT_DEADLINE = 30.0


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def ray_idle(pid: int) -> bool:
    """A worker process Ray keeps warm for later tasks (no actor of ours lives in it)."""
    return cmdline(pid).startswith("ray::IDLE")


def wait_processes_gone(before: set[int], deadline: float) -> list[int]:
    """Descendants not in `before` still alive at `deadline` (monotonic)."""
    left = set(descendants()) - before
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = set(descendants()) - before
    return sorted(left)


async def eventually(check: Callable[[], Any], what: str, deadline: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `deadline` s
    (generous: only a broken pool misses it, never a slow machine)."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"never happened within {deadline} s: {what}")
        await asyncio.sleep(0.05)


def live_actors(namespace: str, prefix: str = "") -> list[str]:
    """Names of the live named actors of `namespace` (Ray's GCS; works without a dashboard)."""
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace and a["name"].startswith(prefix)
    )


def worker_ids(rt: aiotp.Runtime, pool: str) -> list[str]:
    return sorted(w.worker_id for w in rt.pool_stats(pool).workers)


def serving(rt: aiotp.Runtime, pool: str) -> list[str]:
    return sorted(w.worker_id for w in rt.pool_stats(pool).workers if w.state == "serving")


async def no_actors_left(namespace: str, prefix: str) -> None:
    await eventually(
        lambda: not live_actors(namespace, prefix), f"no live actor {prefix}* in {namespace}"
    )
