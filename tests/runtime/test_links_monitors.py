from __future__ import annotations

import asyncio
from typing import Any

import pytest
from actors import Counter, Recorder, Sleeper

import aiotp


@pytest.mark.expect_errors("crashed")
async def test_linked_abnormal_exit_kills_a_non_trapping_actor(rt: aiotp.Runtime) -> None:
    a = await rt.spawn(Recorder)
    b = await rt.spawn(Counter)
    await a.call(("link", b))
    with pytest.raises(ValueError):
        await b.call("crash")
    await rt._wait_gone(a, 1.0)
    assert isinstance(a.exit_reason, ValueError)


async def test_normal_exit_does_not_propagate_over_links(rt: aiotp.Runtime) -> None:
    a = await rt.spawn(Recorder)
    b = await rt.spawn(Counter)
    await a.call(("link", b))
    await rt.stop(b, "normal")
    assert a.alive
    assert await a.call(("seen",)) == []


@pytest.mark.expect_errors("crashed")
async def test_trap_exit_turns_signals_into_exit_messages(rt: aiotp.Runtime) -> None:
    a = await rt.spawn(Recorder, True)
    b = await rt.spawn(Counter)
    c = await rt.spawn(Counter)
    await a.call(("link", b))
    await a.call(("link", c))
    with pytest.raises(ValueError):
        await b.call("crash")
    await rt.stop(c, "normal")
    seen = await a.call(("wait_for", 2))
    assert [type(m) for m in seen] == [aiotp.Exit, aiotp.Exit]
    assert seen[0].sender is b and isinstance(seen[0].reason, ValueError)
    assert seen[1].sender is c and seen[1].reason == "normal"
    assert a.alive


async def test_kill_cannot_be_trapped_and_is_seen_as_killed(rt: aiotp.Runtime) -> None:
    watcher = await rt.spawn(Recorder, True)
    victim = await rt.spawn(Recorder, True)
    await watcher.call(("link", victim))
    rt.exit(victim, "kill")
    seen = await watcher.call(("wait_for", 1))
    assert victim.exit_reason == "killed"
    assert seen == [aiotp.Exit(victim, "killed")]


async def test_exit_normal_is_ignored_by_non_trapping_actor(rt: aiotp.Runtime) -> None:
    c = await rt.spawn(Counter)
    rt.exit(c, "normal")
    assert await c.call("get") == 0
    rt.exit(c, "shutdown")
    await rt._wait_gone(c, 1.0)
    assert c.exit_reason == "shutdown"


async def test_exit_signal_runs_terminate_but_kill_does_not(rt: aiotp.Runtime) -> None:
    events: list[Any] = []
    a = await rt.spawn(Sleeper, False, events)
    rt.exit(a, "shutdown")
    await rt._wait_gone(a, 1.0)
    b = await rt.spawn(Sleeper, False, events)
    rt.exit(b, "kill")
    await rt._wait_gone(b, 1.0)
    assert events == [("terminate", "shutdown")]


async def test_thousand_actors_linked_in_a_chain_all_die_when_first_is_killed(
    rt: aiotp.Runtime,
) -> None:
    first = await rt.spawn(Recorder)
    chain = [first]
    for _ in range(999):
        chain.append(await chain[-1].call(("spawn_linked", Recorder)))
    last_watcher = await rt.spawn(Recorder)
    mref = await last_watcher.call(("monitor", chain[-1]))
    rt.exit(first, "kill")
    seen = await asyncio.wait_for(last_watcher.call(("wait_for", 1)), 5.0)
    assert seen[0].monitor == mref and seen[0].actor is chain[-1]
    assert all(not ref.alive for ref in chain)
    assert first.exit_reason == "killed"
    assert all(ref.exit_reason == "killed" for ref in chain[1:])


async def test_monitor_delivers_down_with_reason(rt: aiotp.Runtime) -> None:
    w = await rt.spawn(Recorder)
    t = await rt.spawn(Counter)
    m1 = await w.call(("monitor", t))
    m2 = await w.call(("monitor", t))
    await rt.stop(t, ("shutdown", "bye"))
    seen = await w.call(("wait_for", 2))
    assert {d.monitor for d in seen} == {m1, m2}
    assert all(d.reason == ("shutdown", "bye") and d.actor is t for d in seen)


async def test_monitor_on_dead_actor_delivers_noproc_at_once(rt: aiotp.Runtime) -> None:
    w = await rt.spawn(Recorder)
    t = await rt.spawn(Counter)
    await rt.stop(t)
    mref = await w.call(("monitor", t))
    seen = await w.call(("wait_for", 1))
    assert seen == [aiotp.Down(mref, t, "noproc")]


async def test_demonitor_stops_down_delivery(rt: aiotp.Runtime) -> None:
    class Watcher(Recorder):
        async def handle_cast(self, msg: Any) -> None:
            self.demonitor(msg)

    w = await rt.spawn(Watcher)
    t = await rt.spawn(Counter)
    mref = await w.call(("monitor", t))
    await w.cast(mref)
    assert await w.call(("seen",)) == []
    await rt.stop(t)
    probe = await w.call(("monitor", t))  # a fresh monitor on the dead actor: noproc only
    assert await w.call(("wait_for", 1)) == [aiotp.Down(probe, t, "noproc")]


async def test_spawn_link_from_inside_an_actor_links_to_it(rt: aiotp.Runtime) -> None:
    parent = await rt.spawn(Recorder)
    child = await parent.call(("spawn_linked", Counter))
    rt.exit(parent, "boom")
    await rt._wait_gone(child, 1.0)
    assert child.exit_reason == "boom"


@pytest.mark.expect_errors("crashed")
async def test_link_to_dead_actor(rt: aiotp.Runtime) -> None:
    trapper = await rt.spawn(Recorder, True)
    dead = await rt.spawn(Counter)
    await rt.stop(dead)
    await trapper.call(("link", dead))
    assert await trapper.call(("wait_for", 1)) == [aiotp.Exit(dead, "noproc")]
    plain = await rt.spawn(Recorder)
    with pytest.raises(aiotp.NoProc):
        await plain.call(("link", dead))


async def test_on_exit_runs_on_every_exit_even_kill_and_failed_init(rt: aiotp.Runtime) -> None:
    seen: list[Any] = []

    class Owner(aiotp.Actor):
        async def init(self, fail: bool = False) -> None:
            if fail:
                raise RuntimeError("init failed")

        async def handle_info(self, msg: Any) -> None:
            await asyncio.sleep(60)

        def on_exit(self, reason: Any) -> None:
            seen.append(reason if isinstance(reason, str) else type(reason).__name__)

    a = await rt.spawn(Owner)
    a.send("block")
    await asyncio.sleep(0)
    rt.exit(a, "kill")
    b = await rt.spawn(Owner)
    await rt.stop(b, "shutdown")
    with pytest.raises(RuntimeError):
        await rt.spawn(Owner, True)
    await rt._wait_gone(a, 1.0)
    assert sorted(seen) == ["RuntimeError", "killed", "shutdown"]
