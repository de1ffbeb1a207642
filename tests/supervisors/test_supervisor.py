from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from children import Child, FailsOnInit, crash, spec

import aiotp
from aiotp.runtime.clock import VirtualClock
from aiotp.supervisors.intensity import RestartIntensity


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_one_for_one_restarts_only_the_crashed_child(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    sup = await rt.spawn(aiotp.Supervisor, [spec(n, log) for n in "abc"])
    before = await sup.which_children()
    log.clear()
    await crash(sup, "b")
    after = await sup.which_children()
    assert log == [("stop", "b"), ("start", "b")]  # a crashed child's terminate runs too
    assert [c.ref is d.ref for c, d in zip(before, after, strict=True)] == [True, False, True]
    assert all(c.ref is not None and c.ref.alive for c in after)


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_one_for_all_restarts_everyone_stopping_in_reverse(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    sup = await rt.spawn(aiotp.Supervisor, [spec(n, log) for n in "abcd"], strategy="one_for_all")
    log.clear()
    await crash(sup, "b")
    assert log == [
        ("stop", "b"),
        ("stop", "d"),
        ("stop", "c"),
        ("stop", "a"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_rest_for_one_restarts_the_later_children_in_order(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    sup = await rt.spawn(aiotp.Supervisor, [spec(n, log) for n in "abcd"], strategy="rest_for_one")
    before = {c.id: c.ref for c in await sup.which_children()}
    log.clear()
    await crash(sup, "b")
    assert log == [
        ("stop", "b"),
        ("stop", "d"),
        ("stop", "c"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]
    after = {c.id: c.ref for c in await sup.which_children()}
    assert after["a"] is before["a"] and all(after[k] is not before[k] for k in "bcd")


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_restart_types_against_normal_and_abnormal_exits(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    sup = await rt.spawn(
        aiotp.Supervisor,
        [
            spec("perm", log, restart="permanent"),
            spec("trans", log, restart="transient"),
            spec("trans2", log, restart="transient"),
            spec("temp", log, restart="temporary"),
        ],
        max_restarts=10,
    )
    refs = {c.id: c.ref for c in await sup.which_children()}

    async def end(child: str, how: str) -> None:
        ref = refs[child]
        assert ref is not None
        if how == "crash":
            with pytest.raises(RuntimeError):
                await ref.call("crash")
        else:
            await ref.call(how)
        while ref.alive:
            await asyncio.sleep(0)
        await sup.count_children()

    await end("perm", "exit_normal")  # permanent: restarted even after normal
    await end("trans", "exit_shutdown")  # transient: ("shutdown", term) is normal
    await end("trans2", "crash")  # transient: restarted after a crash
    await end("temp", "crash")  # temporary: never restarted, its spec is dropped
    now = {c.id: c.ref for c in await sup.which_children()}
    assert set(now) == {"perm", "trans", "trans2"}
    assert now["perm"] is not refs["perm"] and now["perm"] is not None
    assert now["trans"] is None
    assert now["trans2"] is not refs["trans2"] and now["trans2"] is not None
    counts = await sup.count_children()
    assert counts == {"specs": 3, "active": 2, "supervisors": 0, "workers": 3}


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_temporary_children_are_not_restarted_when_a_sibling_takes_them_down(
    rt: aiotp.Runtime,
) -> None:
    log: list[Any] = []
    sup = await rt.spawn(
        aiotp.Supervisor,
        [spec("a", log), spec("t", log, restart="temporary"), spec("c", log)],
        strategy="one_for_all",
    )
    await crash(sup, "a")
    assert [c.id for c in await sup.which_children()] == ["a", "c"]


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_intensity_exceeded_stops_children_and_exits_shutdown(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    sup = await rt.spawn(
        aiotp.Supervisor, [spec(n, log) for n in "ab"], max_restarts=2, max_seconds=60
    )
    events: list[Any] = []
    aiotp.telemetry.attach(
        "intensity",
        ("aiotp", "supervisor", "intensity_exceeded"),
        lambda e, m, md: events.append(md),
    )
    try:
        await crash(sup, "a")
        await crash(sup, "a")
        old = {c.id: c.ref for c in await sup.which_children()}
        with pytest.raises(RuntimeError):
            assert old["a"] is not None
            await old["a"].call("crash")
        await rt._wait_gone(sup, 5)
    finally:
        aiotp.telemetry.detach("intensity")
    assert sup.exit_reason == "shutdown"
    assert old["b"] is not None and not old["b"].alive
    assert events and events[0]["child_id"] == "a"


async def test_intensity_window_slides() -> None:
    clock = [0.0]
    intensity = RestartIntensity(2, 5.0, clock=lambda: clock[0])
    assert intensity.add() and intensity.add()
    clock[0] = 5.5  # both earlier restarts are now older than the window
    assert intensity.add() and intensity.add()
    assert not intensity.add()  # three within 5 s
    with pytest.raises(ValueError):
        RestartIntensity(-1, 5)
    with pytest.raises(ValueError):
        RestartIntensity(1, 0)


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_restarts_older_than_max_seconds_no_longer_count(
    rt: aiotp.Runtime, virtual_clock: VirtualClock
) -> None:
    log: list[Any] = []
    sup = await rt.spawn(aiotp.Supervisor, [spec("a", log)], max_restarts=1, max_seconds=5.0)
    await crash(sup, "a")
    # The window runs on the runtime's clock: once the first restart is more than 5 s old it
    # no longer counts.
    await virtual_clock.advance(5.5)
    await crash(sup, "a")
    assert sup.alive
    await crash(sup, "a")  # two within 5 s: exceeded, however slow the machine
    await rt._wait_gone(sup, 5)
    assert sup.exit_reason == "shutdown"


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_escalation_two_levels_up(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    leaf = aiotp.ChildSpec(
        "leaf_sup",
        aiotp.Supervisor,
        args=([spec("x", log)],),
        kwargs={"max_restarts": 0, "max_seconds": 5},
        type="supervisor",
    )
    middle = aiotp.ChildSpec(
        "middle_sup",
        aiotp.Supervisor,
        args=([leaf],),
        kwargs={"max_restarts": 0, "max_seconds": 5},
        type="supervisor",
    )
    top = await rt.spawn(aiotp.Supervisor, [middle], max_restarts=5)
    [mid] = await top.which_children()
    assert isinstance(mid.ref, aiotp.SupervisorRef)
    [lf] = await mid.ref.which_children()
    assert isinstance(lf.ref, aiotp.SupervisorRef)
    await crash(lf.ref, "x")  # leaf exceeds (0 restarts allowed) -> middle exceeds -> top restarts
    while mid.ref.alive:
        await asyncio.sleep(0.001)
    await top.count_children()
    [mid2] = await top.which_children()
    assert mid2.ref is not mid.ref and mid2.ref is not None and mid2.ref.alive
    assert lf.ref.exit_reason == "shutdown" and mid.ref.exit_reason == "shutdown"
    [lf2] = await mid2.ref.which_children()  # type: ignore[union-attr]
    assert lf2.ref is not None and lf2.ref.alive


async def test_shutdown_timeout_is_honoured_then_the_child_is_killed(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    sup = await rt.spawn(
        aiotp.Supervisor,
        [spec("slow", log, hang_on_stop=30, shutdown=0.3), spec("fast", log)],
    )
    slow = (await sup.which_children())[0].ref
    started = time.monotonic()
    await rt.stop(sup)
    waited = time.monotonic() - started
    assert waited >= 0.3, waited  # it waited the child's shutdown time, not less
    assert waited < 5
    assert slow is not None and slow.exit_reason == "killed"
    assert ("stop", "fast") in log and ("stop", "slow") not in log
    assert log.index(("stop", "fast")) >= 0


async def test_brutal_kill_and_exit_signal_shut_the_tree_down(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    sup = await rt.spawn(aiotp.Supervisor, [spec("a", log), spec("b", log, shutdown="brutal_kill")])
    kids = [c.ref for c in await sup.which_children()]
    rt.exit(sup, "shutdown")
    await rt._wait_gone(sup, 5)
    assert sup.exit_reason == "shutdown"
    assert kids[0] is not None and kids[0].exit_reason == "shutdown"
    assert kids[1] is not None and kids[1].exit_reason == "killed"
    assert ("stop", "a") in log and ("stop", "b") not in log


async def test_child_failing_init_fails_the_supervisor_start_naming_it(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    with pytest.raises(aiotp.StartChildError) as info:
        await rt.spawn(
            aiotp.Supervisor,
            [spec("ok", log), aiotp.ChildSpec("broken", FailsOnInit, args=("no db",))],
        )
    assert info.value.child_id == "broken" and "no db" in str(info.value)
    assert log == [("start", "ok"), ("stop", "ok")]  # the started one was stopped again


async def test_api_and_typed_errors(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    sup = await rt.spawn(aiotp.Supervisor, [spec("a", log)])
    b = await sup.start_child(spec("b", log))
    assert b.alive
    with pytest.raises(aiotp.DuplicateChild):
        await sup.start_child(spec("b", log))
    with pytest.raises(aiotp.ChildRunning):
        await sup.delete_child("b")
    with pytest.raises(aiotp.ChildRunning):
        await sup.restart_child("b")
    await sup.terminate_child("b")
    assert not b.alive
    with pytest.raises(aiotp.DuplicateChild):
        await sup.start_child(spec("b", log))  # present but stopped
    b2 = await sup.restart_child("b")
    assert b2.alive and b2 is not b
    await sup.terminate_child("b")
    await sup.delete_child("b")
    for op in (sup.terminate_child, sup.restart_child, sup.delete_child):
        with pytest.raises(aiotp.UnknownChild):
            await op("nope")
    with pytest.raises(aiotp.StartChildError):
        await sup.start_child(aiotp.ChildSpec("bad", FailsOnInit))
    assert [c.id for c in await sup.which_children()] == ["a"]
    assert sup.alive  # caller mistakes never crash the supervisor


def test_child_spec_validation_names_the_field() -> None:
    async def factory() -> aiotp.ActorRef:
        raise NotImplementedError

    ok = aiotp.ChildSpec("s", factory, type="supervisor")
    assert ok.shutdown_policy == "infinity"
    assert aiotp.ChildSpec("w", Child).shutdown_policy == 5.0
    for bad, field in [
        ({"restart": "sometimes"}, "restart"),
        ({"shutdown": -1}, "shutdown"),
        ({"shutdown": "later"}, "shutdown"),
        ({"type": "manager"}, "type"),
        ({"args": "abc"}, "args"),
        ({"args": 5}, "args"),
        ({"kwargs": {1: 2}}, "kwargs"),
    ]:
        with pytest.raises(ValueError, match=field):
            aiotp.ChildSpec("x", Child, **bad)
    with pytest.raises(ValueError, match="start"):
        aiotp.ChildSpec("x", object)
    with pytest.raises(ValueError, match="start"):
        aiotp.ChildSpec("x", lambda: None)


async def test_invalid_supervisor_settings_are_refused(rt: aiotp.Runtime) -> None:
    for kw in (
        {"strategy": "one_for_some"},
        {"max_restarts": -1},
        {"max_seconds": 0},
    ):
        with pytest.raises(ValueError):
            await rt.spawn(aiotp.Supervisor, [], **kw)
    with pytest.raises(ValueError):
        await rt.spawn(aiotp.DynamicSupervisor, max_children=-1)
    with pytest.raises(ValueError):
        await rt.spawn(aiotp.DynamicSupervisor, strategy="one_for_all")


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_subclass_style(rt: aiotp.Runtime) -> None:
    log: list[Any] = []

    class App(aiotp.Supervisor):
        strategy = "rest_for_one"
        max_restarts = 7

        def children(self) -> list[aiotp.ChildSpec]:
            return [spec("db", log), spec("web", log)]

    app = await rt.spawn(App, name="app")
    assert [c.id for c in await app.which_children()] == ["db", "web"]
    assert app._actor.strategy == "rest_for_one"  # type: ignore[union-attr]
    log.clear()
    await crash(app, "db")
    assert log == [("stop", "db"), ("stop", "web"), ("start", "db"), ("start", "web")]


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_async_factory_children_are_linked_and_restarted(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    started: list[aiotp.ActorRef] = []

    async def factory(name: str) -> aiotp.ActorRef:
        ref = await rt.spawn(Child, name, log)
        started.append(ref)
        return ref

    sup = await rt.spawn(aiotp.Supervisor, [aiotp.ChildSpec("f", factory, args=("f",))])
    await crash(sup, "f")
    assert len(started) == 2 and started[1].alive
    await rt.stop(sup)
    assert not started[1].alive


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_telemetry_reports_child_lifecycle(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    seen: list[str] = []
    aiotp.telemetry.attach(
        "children", ("aiotp", "supervisor", "child"), lambda e, m, md: seen.append(e[-1])
    )
    try:
        sup = await rt.spawn(aiotp.Supervisor, [spec("a", log)])
        await crash(sup, "a")
        await rt.stop(sup)
    finally:
        aiotp.telemetry.detach("children")
    assert seen == ["started", "exited", "started", "restarted", "terminated"]


@pytest.mark.expect_errors("crashed", "restarts in")
async def test_dynamic_supervisor(rt: aiotp.Runtime) -> None:
    log: list[Any] = []
    dyn = await rt.spawn(aiotp.DynamicSupervisor, max_children=3, extra_args=("x",))

    class Pair(aiotp.Actor):
        async def init(self, prefix: str, n: int) -> None:
            self.v = f"{prefix}{n}"

        async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
            if msg == "crash":
                raise RuntimeError("boom")
            return self.v

    a = await dyn.start_child(aiotp.ChildSpec("pair", Pair, args=(1,)))
    b = await dyn.start_child(aiotp.ChildSpec("pair", Pair, args=(2,)))
    t = await dyn.start_child(aiotp.ChildSpec("pair", Pair, args=(3,), restart="temporary"))
    assert [await r.call("v") for r in (a, b, t)] == ["x1", "x2", "x3"]
    with pytest.raises(aiotp.MaxChildren):
        await dyn.start_child(aiotp.ChildSpec("pair", Pair, args=(4,)))
    with pytest.raises(RuntimeError):
        await t.call("crash")
    while t.alive:
        await asyncio.sleep(0)
    assert (await dyn.count_children())["specs"] == 2  # the temporary one left its slot
    with pytest.raises(RuntimeError):
        await a.call("crash")
    while a.alive:
        await asyncio.sleep(0)
    kids = await dyn.which_children()
    assert len(kids) == 2 and all(k.ref is not None and k.ref.alive for k in kids)
    await dyn.terminate_child(b)
    assert len(await dyn.which_children()) == 1
    with pytest.raises(aiotp.UnknownChild):
        await dyn.terminate_child(b)
    zero = await rt.spawn(aiotp.DynamicSupervisor, max_children=0)
    with pytest.raises(aiotp.MaxChildren):
        await zero.start_child(spec("n", log))
