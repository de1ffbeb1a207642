from __future__ import annotations

import asyncio
from typing import Any

import pytest
from actors import Counter, Sleeper

import aiotp


async def test_call_and_cast_by_ref_and_by_name(rt: aiotp.Runtime) -> None:
    c = await rt.spawn(Counter, 5, name="counter")
    await c.cast(2)
    assert await c.call("get", timeout=5.0) == 7
    assert await rt.call("counter", "get") == 7
    await rt.cast("counter", 1)
    assert await rt.call("counter", "get") == 8
    assert rt.whereis("counter") is c


@pytest.mark.expect_errors("crashed")
async def test_exception_in_handle_call_reaches_caller_and_crashes_actor(rt: aiotp.Runtime) -> None:
    c = await rt.spawn(Counter)
    with pytest.raises(ValueError, match="asked to crash"):
        await c.call("crash")
    await rt._wait_gone(c, 2.0)
    assert isinstance(c.exit_reason, ValueError)
    with pytest.raises(aiotp.NoProc):
        await c.call("get")


async def test_call_timeout_leaves_no_stale_reply_for_the_next_call(rt: aiotp.Runtime) -> None:
    class Echo(aiotp.Actor):
        async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
            if msg == "slow":
                await asyncio.sleep(0.2)
            return msg

    e = await rt.spawn(Echo)
    with pytest.raises(aiotp.CallTimeout):
        await e.call("slow", timeout=0.05)
    # The late "slow" reply must not be mistaken for this call's reply.
    assert await e.call("fast") == "fast"
    assert await e.call("again") == "again"


async def test_deferred_reply_with_noreply(rt: aiotp.Runtime) -> None:
    class Deferrer(aiotp.Actor):
        async def init(self) -> None:
            self.parked: list[aiotp.Caller] = []

        async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
            if msg == "park":
                self.parked.append(caller)
                return aiotp.NOREPLY
            for p in self.parked:
                p.reply("released")
            return len(self.parked)

    d = await rt.spawn(Deferrer)
    parked = [asyncio.ensure_future(d.call("park")) for _ in range(3)]
    await asyncio.sleep(0)  # the three call tasks run (and queue) before ours
    assert await d.call("release") == 3
    assert await asyncio.gather(*parked) == ["released"] * 3


async def test_deferred_caller_gets_actor_exited_when_actor_dies(rt: aiotp.Runtime) -> None:
    class Parker(aiotp.Actor):
        async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
            return aiotp.NOREPLY

    p = await rt.spawn(Parker)
    pending = asyncio.ensure_future(p.call("x", timeout=30))
    await asyncio.sleep(0)
    await rt.stop(p, "shutdown")
    with pytest.raises(aiotp.ActorExited) as info:
        await asyncio.wait_for(pending, 1.0)
    assert info.value.reason == "shutdown"


async def test_calling_yourself_fails_at_once(rt: aiotp.Runtime) -> None:
    class Narcissus(aiotp.Actor):
        async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
            if msg == "self":
                try:
                    await self.ref.call("x", timeout=30)
                except aiotp.AiotpError as exc:
                    return type(exc).__name__
            if msg == "stop-self":
                try:
                    await self.runtime.stop(self.ref)
                except aiotp.AiotpError as exc:
                    return type(exc).__name__
            return "?"

    n = await rt.spawn(Narcissus, name="n")
    assert await asyncio.wait_for(n.call("self"), 1.0) == "AiotpError"
    assert await asyncio.wait_for(n.call("stop-self"), 1.0) == "AiotpError"


async def test_cast_to_dead_actor_is_dropped_and_call_raises_noproc(rt: aiotp.Runtime) -> None:
    c = await rt.spawn(Counter, name="gone")
    await rt.stop(c)
    await c.cast(1)  # dropped silently, as in OTP
    await rt.cast("gone", 1)
    with pytest.raises(aiotp.NoProc):
        await c.call("get")
    with pytest.raises(aiotp.NoProc):
        await rt.call("gone", "get")
    with pytest.raises(aiotp.NoProc):
        await rt.stop(c)


async def test_bounded_mailbox_raises_mailbox_full(rt: aiotp.Runtime) -> None:
    s = await rt.spawn(Sleeper, max_mailbox=2)
    busy = asyncio.ensure_future(s.call(("sleep", 0.2)))
    await asyncio.sleep(0.01)  # let the actor take the first call off its mailbox
    q1 = asyncio.ensure_future(s.call(("sleep", 0)))
    q2 = asyncio.ensure_future(s.call(("sleep", 0)))
    await asyncio.sleep(0)
    assert s.mailbox_size() == 2
    with pytest.raises(aiotp.MailboxFull):
        await s.cast("x")
    with pytest.raises(aiotp.MailboxFull):
        await s.call(("sleep", 0))
    assert await asyncio.gather(busy, q1, q2) == ["slept"] * 3


async def test_init_exception_makes_spawn_raise(rt: aiotp.Runtime) -> None:
    class Broken(aiotp.Actor):
        async def init(self) -> None:
            raise RuntimeError("bad config")

    with pytest.raises(RuntimeError, match="bad config"):
        await rt.spawn(Broken, name="broken")
    assert rt.whereis("broken") is None


async def test_init_timeout_kills_and_raises(rt: aiotp.Runtime) -> None:
    class Slow(aiotp.Actor):
        async def init(self) -> None:
            await asyncio.sleep(60)

    with pytest.raises(aiotp.CallTimeout):
        await rt.spawn(Slow, init_timeout=0.05)
    assert rt.actors() == []


async def test_stop_from_inside_delivers_the_reply_first(rt: aiotp.Runtime) -> None:
    c = await rt.spawn(Counter)
    assert await c.call("stop") == "stopping"
    await rt._wait_gone(c, 1.0)
    assert c.exit_reason == "normal"


async def test_bad_spawn_arguments_are_refused(rt: aiotp.Runtime) -> None:
    with pytest.raises(TypeError):
        await rt.spawn(object)  # type: ignore[type-var]
    with pytest.raises(TypeError):
        await rt.spawn(Counter, name=["unhashable"])
    with pytest.raises(ValueError):
        await rt.spawn(Counter, max_mailbox=0)
    with pytest.raises(aiotp.AiotpError):
        await rt.spawn(Counter, link=True)  # no calling actor to link to
    c = await rt.spawn(Counter)
    with pytest.raises(ValueError):
        await c.call("get", timeout=0)
    with pytest.raises(ValueError):
        await c.call("get", timeout=-1)


async def test_spawn_after_runtime_closed_raises() -> None:
    rt = aiotp.Runtime()
    async with rt:
        pass
    with pytest.raises(aiotp.RuntimeClosed):
        await rt.spawn(Counter)


async def test_repr_shows_phase_and_mailbox(rt: aiotp.Runtime) -> None:
    c = await rt.spawn(Counter, name="counter")
    assert repr(c) == "<ActorRef Counter 'counter' RUNNING mailbox=0>"  # its class and name
    await rt.stop(c)
    assert "DEAD" in repr(c) and "Counter" in repr(c)  # still named after it exited


async def test_a_cast_is_queued_when_called_awaited_or_not(rt: aiotp.Runtime) -> None:
    """A forgotten `await` on cast must not drop the message (a coroutine would, silently)."""
    import warnings

    c = await rt.spawn(Counter, 0, name="forgetful")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" either
        c.cast(1)
        rt.cast("forgetful", 2)
    await c.cast(3)
    await rt.cast(c, 4)
    assert await c.call("get") == 10
