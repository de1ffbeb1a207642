from __future__ import annotations

import asyncio
from typing import Any

import pytest
from actors import Counter, Recorder

import aiotp


async def test_duplicate_name_raises_name_taken(rt: aiotp.Runtime) -> None:
    await rt.spawn(Counter, name="x")
    with pytest.raises(aiotp.NameTaken):
        await rt.spawn(Counter, name="x")
    assert len(rt.actors()) == 1


@pytest.mark.expect_errors("crashed")
async def test_name_is_freed_when_actor_dies_and_can_be_reused(rt: aiotp.Runtime) -> None:
    first = await rt.spawn(Counter, 1, name=("svc", 1))
    with pytest.raises(ValueError):
        await first.call("crash")
    await rt._wait_gone(first, 1.0)
    assert rt.whereis(("svc", 1)) is None
    second = await rt.spawn(Counter, 2, name=("svc", 1))
    assert await rt.call(("svc", 1), "get") == 2
    assert rt.registered() == [("svc", 1)]
    assert second is not first


async def test_unknown_name_raises_noproc(rt: aiotp.Runtime) -> None:
    with pytest.raises(aiotp.NoProc):
        await rt.call("nobody", "get")
    with pytest.raises(aiotp.NoProc):
        await rt.stop("nobody")
    with pytest.raises(aiotp.NoProc):
        rt.exit("nobody", "kill")


async def test_send_after_delivers_and_cancel_prevents(rt: aiotp.Runtime) -> None:
    class Ticker(Recorder):
        async def handle_cast(self, msg: Any) -> None:
            kept = self.send_after(0.01, "tick")
            dropped = self.send_after(0.01, "never")
            assert dropped.cancel() is True
            assert dropped.cancel() is False
            self.kept = kept

    t = await rt.spawn(Ticker)
    await t.cast("go")
    assert await asyncio.wait_for(t.call(("wait_for", 1)), 1.0) == ["tick"]
    # A later timer shows the cancelled one never arrived before it.
    rt.send_after(t, 0.02, "later")
    assert await asyncio.wait_for(t.call(("wait_for", 2)), 1.0) == ["tick", "later"]


async def test_timers_are_cancelled_when_the_actor_dies(rt: aiotp.Runtime) -> None:
    r = await rt.spawn(Recorder)
    timer = rt.send_after(r, 30, "late")
    await rt.stop(r)
    assert r._timers is None
    assert timer.cancel() is False


async def test_send_after_rejects_negative_delay(rt: aiotp.Runtime) -> None:
    r = await rt.spawn(Recorder)
    with pytest.raises(ValueError):
        rt.send_after(r, -1, "x")
