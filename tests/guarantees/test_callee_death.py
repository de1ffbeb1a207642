"""Point 1: a call in progress learns at once that its callee died, whatever killed it.

Each test first waits until the callee is *inside* `handle_call` (an event the handler sets),
so the kill lands on a call in progress, not on one still queued in the mailbox.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aiotp


class Busy(aiotp.Actor):
    """Enters handle_call, says so, then waits forever."""

    async def init(self, entered: asyncio.Event) -> None:
        self.entered = entered

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        self.entered.set()
        await asyncio.Event().wait()


async def _call_in_progress(
    ref: aiotp.ActorRef, entered: asyncio.Event, timeout: float | None
) -> asyncio.Future[Any]:
    call = asyncio.ensure_future(ref.call("work", timeout=timeout))
    await asyncio.wait_for(entered.wait(), 5.0)
    assert not call.done()
    return call


async def _fails_within_two_iterations(call: asyncio.Future[Any]) -> aiotp.ActorExited:
    for _ in range(3):
        await asyncio.sleep(0)
    assert call.done(), "the caller was not told of its callee's death within two iterations"
    with pytest.raises(aiotp.ActorExited) as info:
        await call
    return info.value


@pytest.mark.parametrize("timeout", [30.0, None])
async def test_call_in_progress_fails_at_once_when_callee_is_killed(
    rt: aiotp.Runtime, timeout: float | None
) -> None:
    entered = asyncio.Event()
    ref = await rt.spawn(Busy, entered)
    call = await _call_in_progress(ref, entered, timeout)
    rt.exit(ref, "kill")
    assert (await _fails_within_two_iterations(call)).reason == "killed"


async def test_call_in_progress_fails_at_once_on_an_untrapped_exit_signal(
    rt: aiotp.Runtime,
) -> None:
    entered = asyncio.Event()
    ref = await rt.spawn(Busy, entered)
    call = await _call_in_progress(ref, entered, 30.0)
    rt.exit(ref, "bad_thing")
    assert (await _fails_within_two_iterations(call)).reason == "bad_thing"


async def test_call_in_progress_fails_at_once_when_its_supervisor_brutal_kills_it(
    rt: aiotp.Runtime,
) -> None:
    entered = asyncio.Event()
    sup = await rt.spawn(
        aiotp.Supervisor,
        [aiotp.ChildSpec("busy", Busy, args=(entered,), shutdown="brutal_kill")],
    )
    [child] = await sup.which_children()
    assert child.ref is not None
    call = await _call_in_progress(child.ref, entered, 30.0)
    await sup.terminate_child("busy")
    assert (await _fails_within_two_iterations(call)).reason == "killed"


async def test_deferred_and_queued_callers_fail_with_the_in_progress_one(rt: aiotp.Runtime) -> None:
    entered = asyncio.Event()
    ref = await rt.spawn(Busy, entered)
    call = await _call_in_progress(ref, entered, None)
    queued = asyncio.ensure_future(ref.call("later", timeout=None))
    await asyncio.sleep(0)
    rt.exit(ref, "kill")
    for fut in (call, queued):
        assert (await _fails_within_two_iterations(fut)).reason == "killed"
