"""`aiotp.Application` in-process: starts whole or not at all, stops in reverse order, bounded,
idempotent, and safe to cancel at any point of its start."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aiotp
from aiotp.ops.application import Application, ApplicationStartError, AppState

EVENTS: list[str] = []


class Recorder(aiotp.Actor):
    async def init(self, label: str, delay: float = 0.0, fail: bool = False) -> None:
        self.label = label
        if delay:
            await asyncio.sleep(delay)
        if fail:
            raise RuntimeError(f"{label} refuses to start")
        EVENTS.append(f"start {label}")

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        if msg == "crash":
            raise RuntimeError("asked to crash")
        return self.label

    async def terminate(self, reason: Any) -> None:
        EVENTS.append(f"stop {self.label}")


def _spec(label: str, **kwargs: Any) -> aiotp.ChildSpec:
    return aiotp.ChildSpec(label, Recorder, args=(label,), kwargs=kwargs, name=label)


@pytest.fixture(autouse=True)
def _clear() -> None:
    EVENTS.clear()


async def test_starts_in_order_and_stops_in_reverse() -> None:
    app = Application("shop", [_spec("a"), _spec("b"), _spec("c")], shutdown_timeout=5.0)
    rt = await app.start()
    assert app.state is AppState.RUNNING
    assert rt.name == "shop"
    assert rt.whereis("shop") == app.supervisor
    assert await rt.call("b", "label") == "b"
    await app.stop()
    assert EVENTS == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert app.state is AppState.STOPPED
    assert not rt.running
    await app.stop()  # idempotent


async def test_children_from_settings() -> None:
    def tree(settings: Any) -> list[aiotp.ChildSpec]:
        return [_spec(f"w{i}") for i in range(settings["workers"])]

    async with Application("cfg", tree, settings={"workers": 3}) as rt:
        assert {n for n in rt.registered() if isinstance(n, str)} >= {"w0", "w1", "w2"}


async def test_a_failing_child_stops_what_started_and_raises_typed() -> None:
    app = Application("broken", [_spec("a"), _spec("b", fail=True), _spec("c")])
    with pytest.raises(ApplicationStartError, match="broken") as info:
        await app.start()
    assert info.value.__cause__ is not None
    assert EVENTS == ["start a", "stop a"]
    assert app.state is AppState.STOPPED
    rt = app._runtime
    assert rt is not None and not rt.running and rt.actors() == []


@pytest.mark.parametrize("cancel_after", [0.0, 0.05, 0.15])
async def test_cancelling_start_midway_leaves_nothing(cancel_after: float) -> None:
    app = Application("slow", [_spec("a"), _spec("b", delay=0.1), _spec("c", delay=0.1)])
    task = asyncio.ensure_future(app.start())
    await asyncio.sleep(cancel_after)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.state is AppState.STOPPED
    # Children already up are stopped (gracefully when the root supervisor was still starting
    # them; killed with it when its own spawn was abandoned): none is left either way.
    rt = app._runtime
    assert rt is not None and rt.actors() == []


async def test_cancelling_stop_still_stops() -> None:
    app = Application("c", [_spec("a"), _spec("b")])
    await app.start()
    task = asyncio.ensure_future(app.stop())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.state is AppState.STOPPED
    assert EVENTS[-2:] == ["stop b", "stop a"]


@pytest.mark.expect_errors("asked to crash", "Recorder")
async def test_wait_returns_when_the_root_gives_up() -> None:
    app = Application("fragile", [_spec("a")], max_restarts=1, max_seconds=60.0)
    rt = await app.start()
    waiter = asyncio.ensure_future(app.wait())
    for _ in range(5):
        ref = rt.whereis("a")
        if ref is None or not ref.alive:
            await asyncio.sleep(0.01)
            continue
        with pytest.raises(RuntimeError, match="asked to crash"):
            await ref.call("crash")
        if waiter.done():
            break
    reason = await asyncio.wait_for(waiter, 10.0)
    assert reason == "shutdown"  # past its intensity a supervisor exits with "shutdown"
    await app.stop()


async def test_start_twice_and_bad_settings_are_refused() -> None:
    with pytest.raises(TypeError, match="ChildSpec"):
        Application("x", [object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="shutdown_timeout"):
        Application("x", [], shutdown_timeout=0)
    with pytest.raises(TypeError, match="name"):
        Application("", [])
    app = Application("once", [])
    await app.start()
    with pytest.raises(aiotp.AiotpError, match="starts once"):
        await app.start()
    await app.stop()
    with pytest.raises(aiotp.AiotpError, match="not running"):
        app.runtime  # noqa: B018


async def test_stop_during_start_cancels_the_start() -> None:
    app = Application("racy", [_spec("a"), _spec("b", delay=5.0)])
    starting = asyncio.ensure_future(app.start())
    while "start a" not in EVENTS:
        await asyncio.sleep(0.005)
    await app.stop()
    assert app.state is AppState.STOPPED
    with pytest.raises(ApplicationStartError, match="stopped while starting"):
        await starting
    assert app.state is AppState.STOPPED  # not RUNNING on a dead runtime
    rt = app._runtime
    assert rt is not None and not rt.running and rt.actors() == []


async def test_wait_during_stop_returns_after_the_root_exited() -> None:
    app = Application("w", [_spec("a")])
    await app.start()
    stopping = asyncio.ensure_future(app.stop())
    await asyncio.sleep(0)
    assert app.state is AppState.STOPPING
    assert await app.wait() == "shutdown"
    await stopping


async def test_an_on_stop_that_swallows_cancellation_cannot_hold_the_stop() -> None:
    release = asyncio.Event()
    hooks: list[asyncio.Task[Any]] = []

    async def stubborn(_rt: aiotp.Runtime) -> None:
        task = asyncio.current_task()
        assert task is not None
        hooks.append(task)
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # refuses to be cancelled

    app = Application("s", [_spec("a")], shutdown_timeout=0.2, on_stop=stubborn)
    await app.start()
    await asyncio.wait_for(app.stop(), 10.0)  # bounded by shutdown_timeout, not by the hook
    assert EVENTS[-1] == "stop a"
    assert app.state is AppState.STOPPED
    (hook,) = hooks
    assert not hook.done()  # still refusing: the stop did not wait for it
    release.set()
    await asyncio.wait_for(hook, 5.0)


def test_non_finite_shutdown_timeout_is_refused() -> None:
    for bad in (float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="shutdown_timeout"):
            Application("x", [], shutdown_timeout=bad)
