"""Point 4 (actor core) and point 6: cancelling a public coroutine leaves nothing behind, and a
failed `init` takes down what it linked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import wait_until

import aiotp


class SlowInit(aiotp.Actor):
    """Spawns a linked helper, then waits in init until released (or forever)."""

    async def init(self, entered: asyncio.Event, helper_name: Any = None) -> None:
        if helper_name is not None:
            await self.runtime.spawn(Idle, name=helper_name, link=True)
        entered.set()
        await asyncio.Event().wait()


class Idle(aiotp.Actor):
    pass


class FailingInit(aiotp.Actor):
    async def init(self, helper_name: Any, trap_helper: bool = False) -> None:
        await self.runtime.spawn(Trapper if trap_helper else Idle, name=helper_name, link=True)
        raise RuntimeError("init gave up")


class Trapper(aiotp.Actor):
    async def init(self) -> None:
        self.trap_exit = True


async def test_cancelled_spawn_leaves_no_actor_and_frees_its_name(rt: aiotp.Runtime) -> None:
    entered = asyncio.Event()
    spawn = asyncio.ensure_future(rt.spawn(SlowInit, entered, "helper", name="slow"))
    await asyncio.wait_for(entered.wait(), 5.0)
    spawn.cancel()
    with pytest.raises(asyncio.CancelledError):
        await spawn
    assert rt.whereis("slow") is None
    assert rt.whereis("helper") is None, "the actor linked during init outlived the cancel"
    assert rt.actors() == []
    again = await rt.spawn(Idle, name="slow")  # the name is free again
    assert again.alive


async def test_spawn_under_asyncio_timeout_raises_timeout_error_and_cleans_up(
    rt: aiotp.Runtime,
) -> None:
    entered = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await rt.spawn(SlowInit, entered, name="slow")
    assert rt.whereis("slow") is None and rt.actors() == []


async def test_init_timeout_kills_without_an_unretrieved_exception(rt: aiotp.Runtime) -> None:
    entered = asyncio.Event()
    with pytest.raises(aiotp.CallTimeout):
        await rt.spawn(SlowInit, entered, "helper", name="slow", init_timeout=0.1)
    assert rt.actors() == []  # the no_error_logs fixture catches "never retrieved"


@pytest.mark.parametrize("trap_helper", [False, True])
async def test_failed_init_sends_the_exit_signal_to_actors_it_linked(
    rt: aiotp.Runtime, trap_helper: bool
) -> None:
    with pytest.raises(RuntimeError, match="init gave up"):
        await rt.spawn(FailingInit, "helper", trap_helper)
    helper = rt.whereis("helper")
    assert helper is not None
    if not trap_helper:
        # The signal is asynchronous, as in OTP: the helper dies within a few iterations.
        await wait_until(lambda: not helper.alive, 2.0)
        assert isinstance(helper.exit_reason, RuntimeError)
        return
    assert helper is not None  # a trapping actor gets the Exit message and decides itself
    await rt.stop(helper)


async def test_cancelled_shutdown_still_reaches_stopped_with_no_actor_alive() -> None:
    rt = aiotp.Runtime(shutdown_timeout=5.0)
    await rt.__aenter__()

    class SlowStop(aiotp.Actor):
        async def terminate(self, reason: Any) -> None:
            await asyncio.sleep(3600)

    refs = [await rt.spawn(SlowStop) for _ in range(3)]
    shutdown = asyncio.ensure_future(rt.shutdown())
    await asyncio.sleep(0.05)
    shutdown.cancel()
    with pytest.raises(asyncio.CancelledError):
        await shutdown
    assert not any(ref.alive for ref in refs)
    assert repr(rt).startswith("<Runtime STOPPED")
    await rt.shutdown()  # idempotent, returns at once


async def test_second_shutdown_waits_for_the_first() -> None:
    rt = aiotp.Runtime(shutdown_timeout=5.0)
    await rt.__aenter__()
    released = asyncio.Event()

    class Gate(aiotp.Actor):
        async def terminate(self, reason: Any) -> None:
            await released.wait()

    ref = await rt.spawn(Gate)
    first = asyncio.ensure_future(rt.shutdown())
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(rt.shutdown())
    await asyncio.sleep(0.05)
    assert not second.done(), "a second shutdown returned while an actor was still alive"
    released.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5.0)
    assert not ref.alive
