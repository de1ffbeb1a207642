"""Points 4, 8 and 11: starting, losing and stopping a pool's processes leaves nothing behind.

- A cancelled `start_pool` leaves no worker, no template process and no pool name.
- SIGKILL of the template kills no worker and fails no call; it is re-created when needed.
- A process a tool started dies with its worker, however the worker ends.
- The process profile is refused with a typed error where it cannot run; no descriptor leaks
  from a failed start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import Any

import pytest
from helpers import wait_until
from procs import alive, descendants

import aiotp
from aiotp.workers.api import registry

TOOLS = "guarantee_adapters:Tools"
SLOW = "guarantee_adapters:SlowSetup"


def _pool(rt: aiotp.Runtime, name: str) -> Any:
    return registry(rt).get(name)


async def _no_descendants(timeout: float = 5.0) -> None:
    await wait_until(lambda: descendants() == [], timeout)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3, 0.8])
async def test_cancelled_start_pool_leaves_no_process_and_frees_the_name(
    rt: aiotp.Runtime, delay: float
) -> None:
    # One worker at a time, 0.5 s each: the delays land before the template is up, while it
    # starts, in the first worker's setup, and after one worker is ready.
    start = asyncio.ensure_future(
        rt.start_pool("p", SLOW, profile="process", size=3, startup_batch=1)
    )
    await asyncio.sleep(delay)
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    with pytest.raises(aiotp.UnknownPool):
        rt.pool_stats("p")
    assert rt.whereis(("aiotp.pool", "p")) is None
    await _no_descendants()
    await rt.start_pool("p", TOOLS, profile="process", size=1)  # the name is free
    assert await rt.execute("p", "quick", {"value": 1}) == 1


async def test_start_pool_under_asyncio_timeout_raises_timeout_error(rt: aiotp.Runtime) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await rt.start_pool("p", SLOW, profile="thread", size=2)
    with pytest.raises(aiotp.UnknownPool):
        rt.pool_stats("p")


async def test_killing_the_template_kills_no_worker_and_fails_no_call(rt: aiotp.Runtime) -> None:
    await rt.start_pool("p", TOOLS, profile="process", size=2, heartbeat=None)
    pool = _pool(rt, "p")
    template = pool.zygote.pid
    pids = {w.pid for w in rt.pool_stats("p").workers}
    running = asyncio.ensure_future(rt.execute("p", "block", {"seconds": 0.5}, timeout=10))
    await wait_until(lambda: rt.pool_stats("p").busy == 1, 5.0)
    os.kill(template, signal.SIGKILL)
    await wait_until(lambda: not pool.zygote.usable, 5.0)
    assert await running == 0.5
    assert {w.pid for w in rt.pool_stats("p").workers} == pids
    assert all(alive(pid) for pid in pids)
    assert [await rt.execute("p", "quick", {"value": i}) for i in range(4)] == [0, 1, 2, 3]
    # A new worker is forked from a new template.
    victim = next(iter(pids))
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: victim not in {w.pid for w in rt.pool_stats("p").workers}, 10.0)
    await wait_until(lambda: rt.pool_stats("p").live == 2, 10.0)
    assert pool.zygote is not None and pool.zygote.usable and pool.zygote.pid != template
    assert rt.pool_stats("p").restarts == 1


@pytest.mark.parametrize("how", ["stop_pool", "sigkill_worker", "recycle"])
async def test_a_tools_child_process_dies_with_its_worker(rt: aiotp.Runtime, how: str) -> None:
    await rt.start_pool("p", TOOLS, profile="process", size=1, heartbeat=None, cancel_grace=0.2)
    grandchild = await rt.execute("p", "spawn_child", {"seconds": 60})
    worker = await rt.execute("p", "pid")
    assert alive(grandchild)
    if how == "stop_pool":
        await rt.stop_pool("p")
    elif how == "sigkill_worker":
        os.kill(worker, signal.SIGKILL)
    else:  # an overrunning tool gets its worker recycled
        with pytest.raises(aiotp.CallTimeout):
            await rt.execute("p", "block", {"seconds": 60}, timeout=0.1)
    await wait_until(lambda: not alive(grandchild), 10.0)


def test_process_profile_is_refused_with_a_typed_error_without_pidfds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "pidfd_open")
    with pytest.raises(aiotp.UnsupportedPlatform, match="profile='thread'"):
        aiotp.pool_spec("p", TOOLS, profile="process")
    aiotp.pool_spec("p", TOOLS, profile="thread")  # the thread profile runs anywhere


@pytest.mark.expect_errors("failed to start")  # the crash report, once
async def test_a_failed_start_leaks_no_descriptor(rt: aiotp.Runtime) -> None:
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    for profile in ("process", "thread"):  # warm up: imports, the loop's own descriptors
        with pytest.raises(aiotp.WorkerStartError):
            await rt.start_pool("bad", "guarantee_adapters:BrokenSetup", profile=profile, size=1)
    before = fds()
    for _ in range(3):
        with pytest.raises(aiotp.WorkerStartError):
            await rt.start_pool("bad", "guarantee_adapters:BrokenSetup", profile="process", size=2)
    await wait_until(lambda: fds() <= before, 5.0)


async def test_a_failed_fork_leaks_no_descriptor(rt: aiotp.Runtime) -> None:
    """A template that cannot fork (its control socket is gone, as when it died a moment ago):
    the start fails with a typed error and leaves no descriptor behind."""
    from aiotp.workers.process_start import start_process_worker
    from aiotp.workers.zygote_client import Zygote

    zygote = await Zygote.start(TOOLS, None)
    assert zygote is not None and await zygote.wait_ready()
    control = zygote._ctrl
    dead_end, peer = socket.socketpair()
    peer.close()
    try:
        before = len(os.listdir("/proc/self/fd"))
        for i in range(3):
            zygote._ctrl, zygote.usable = dead_end, True  # a template that can no longer fork
            with pytest.raises(aiotp.WorkerStartError, match="failed to fork"):
                await start_process_worker(TOOLS, worker_id=f"w{i}", zygote=zygote)
        assert len(os.listdir("/proc/self/fd")) <= before
    finally:
        zygote._ctrl = control
        dead_end.close()
        await zygote.aclose()


def test_an_env_that_cannot_be_an_environment_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="cannot be put in an environment"):
        aiotp.pool_spec("p", TOOLS, profile="process", env={"X": "a\0b"})
