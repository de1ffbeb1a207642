"""The virtual clock: timers fire on simulated time, in order, and alike on every run."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aiotp
from aiotp.runtime.clock import ClockError, RealClock, VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def vrt(clock: VirtualClock) -> AsyncIterator[aiotp.Runtime]:
    async with aiotp.Runtime(shutdown_timeout=2.0, clock=clock) as runtime:
        yield runtime


class Log(aiotp.Actor):
    """Records (now, msg) for every info message; reacts to a few scripted ones."""

    async def init(self, log: list[Any], script: dict[Any, Any] | None = None) -> None:
        self.log = log
        self.script = script or {}

    async def handle_info(self, msg: Any) -> None:
        self.log.append((self.runtime.clock.now(), msg))
        action = self.script.get(msg)
        if action is None:
            return
        kind, *rest = action
        if kind == "after":  # set another timer from this reaction
            self.send_after(rest[0], rest[1])
        elif kind == "cancel":  # cancel a timer set earlier
            rest[0]["timer"].cancel()
        elif kind == "call":  # an awaited round trip to another actor before returning
            self.log.append((self.runtime.clock.now(), await rest[0].call("get")))

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        return len(self.log)


async def test_advance_fires_due_timers_in_time_order_and_ties_in_the_order_they_were_set(
    vrt: aiotp.Runtime, clock: VirtualClock
) -> None:
    log: list[Any] = []
    a = await vrt.spawn(Log, log)
    for delay, msg in ((3.0, "c"), (1.0, "a"), (2.0, "b1"), (2.0, "b2"), (10.0, "late")):
        vrt.send_after(a, delay, msg)
    await clock.advance(5)
    assert log == [(1.0, "a"), (2.0, "b1"), (2.0, "b2"), (3.0, "c")]
    assert clock.now() == 5.0
    assert clock.pending() == 1  # "late" waits for its time
    await clock.advance(5)
    assert log[-1] == (10.0, "late")
    await vrt.stop(a)


async def test_time_stands_still_until_advanced(vrt: aiotp.Runtime, clock: VirtualClock) -> None:
    log: list[Any] = []
    a = await vrt.spawn(Log, log)
    vrt.send_after(a, 0.001, "tick")
    await asyncio.sleep(0.05)  # fifty times the delay, in real time
    assert log == []
    assert clock.now() == 0.0
    await clock.advance(0.001)
    assert log == [(0.001, "tick")]
    await vrt.stop(a)


async def test_a_timer_set_by_a_reaction_fires_in_the_same_advance_when_due(
    vrt: aiotp.Runtime, clock: VirtualClock
) -> None:
    log: list[Any] = []
    # "first" at 1 sets "chained" for 1.5, which must come before "second" (set earlier, at 2);
    # "chained" sets "beyond" for 3.5: past this advance, so it must wait.
    script = {"first": ("after", 0.5, "chained"), "chained": ("after", 2.0, "beyond")}
    a = await vrt.spawn(Log, log, script)
    vrt.send_after(a, 1.0, "first")
    vrt.send_after(a, 2.0, "second")
    await clock.advance(3)
    assert log == [(1.0, "first"), (1.5, "chained"), (2.0, "second")]
    await clock.advance(0.5)
    assert log[-1] == (3.5, "beyond")
    await vrt.stop(a)


async def test_a_timer_cancelled_by_an_earlier_timers_reaction_never_fires(
    vrt: aiotp.Runtime, clock: VirtualClock
) -> None:
    log: list[Any] = []
    holder: dict[str, Any] = {}
    a = await vrt.spawn(Log, log, {"canceller": ("cancel", holder)})
    vrt.send_after(a, 1.0, "canceller")
    holder["timer"] = vrt.send_after(a, 2.0, "cancelled")
    vrt.send_after(a, 3.0, "after")
    await clock.advance(10)
    assert log == [(1.0, "canceller"), (3.0, "after")]
    assert holder["timer"].cancel() is False  # already cancelled: nothing left to cancel
    assert clock.pending() == 0
    await vrt.stop(a)


async def test_cancelling_before_and_after_firing(vrt: aiotp.Runtime, clock: VirtualClock) -> None:
    log: list[Any] = []
    a = await vrt.spawn(Log, log)
    dropped = vrt.send_after(a, 1.0, "dropped")
    kept = vrt.send_after(a, 1.0, "kept")
    assert clock.pending() == 2
    assert dropped.cancel() is True
    assert clock.pending() == 1
    await clock.advance(1)
    assert log == [(1.0, "kept")]
    assert kept.cancel() is False  # it fired: too late to cancel
    assert clock.pending() == 0
    assert clock.next_deadline() is None
    await vrt.stop(a)


async def test_an_actors_reaction_finishes_before_the_next_timer_fires(
    vrt: aiotp.Runtime, clock: VirtualClock
) -> None:
    log: list[Any] = []
    other = await vrt.spawn(Log, [])
    a = await vrt.spawn(Log, log, {"first": ("call", other)})
    vrt.send_after(a, 1.0, "first")
    vrt.send_after(a, 1.0, "second")  # the same instant: still after first's whole reaction
    await clock.advance(1)
    assert log == [(1.0, "first"), (1.0, 0), (1.0, "second")]
    await vrt.stop(a)
    await vrt.stop(other)


async def test_advance_zero_fires_what_is_due_now_and_nothing_later(
    vrt: aiotp.Runtime, clock: VirtualClock
) -> None:
    log: list[Any] = []
    a = await vrt.spawn(Log, log)
    vrt.send_after(a, 0, "now")
    vrt.send_after(a, 0.5, "later")
    await clock.advance(0)
    assert log == [(0.0, "now")]
    assert clock.now() == 0.0
    await clock.advance(0)  # nothing due: a no-op
    assert log == [(0.0, "now")]
    await vrt.stop(a)


@pytest.mark.parametrize("bad", [-1, -0.001, math.inf, math.nan, "1", True, None])
async def test_a_negative_or_non_numeric_advance_is_a_clock_error_and_moves_nothing(
    clock: VirtualClock, bad: Any
) -> None:
    fired: list[int] = []
    clock.call_later(0, fired.append, 1)
    with pytest.raises(ClockError):
        await clock.advance(bad)
    assert clock.now() == 0.0
    assert fired == []  # not even what was due now
    assert issubclass(ClockError, aiotp.AiotpError)


async def test_a_real_clock_runtime_refuses_to_advance(rt: aiotp.Runtime) -> None:
    assert isinstance(rt.clock, RealClock)
    assert rt.clock.virtual is False
    with pytest.raises(ClockError, match="real time"):
        await rt.clock.advance(1)


async def test_two_advances_at_once_are_refused(clock: VirtualClock) -> None:
    started = asyncio.Event()

    def slow_reaction() -> None:
        started.set()

    clock.call_later(1, slow_reaction)
    first = asyncio.ensure_future(clock.advance(2))
    await started.wait()  # the first advance is running (settling after the timer)
    with pytest.raises(ClockError, match="already"):
        await clock.advance(1)
    await first
    assert clock.now() == 2.0


async def test_a_runtime_refuses_a_clock_that_is_not_one() -> None:
    with pytest.raises(TypeError, match="clock"):
        aiotp.Runtime(clock=lambda: 0.0)  # type: ignore[arg-type]


async def test_clock_sleep_returns_only_when_advanced_that_far(clock: VirtualClock) -> None:
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(10)
        woke.append(clock.now())

    task = asyncio.ensure_future(sleeper())
    await clock.advance(9.5)
    assert woke == []
    await clock.advance(0.5)
    assert woke == [10.0]
    await task
    await clock.sleep(0)  # returns at once


async def test_a_cancelled_clock_sleep_leaves_no_timer(clock: VirtualClock) -> None:
    task = asyncio.ensure_future(clock.sleep(5))
    await asyncio.sleep(0)
    assert clock.pending() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending() == 0


@pytest.mark.expect_errors("virtual timer")
async def test_a_timer_callback_that_raises_is_reported_and_the_others_still_fire(
    clock: VirtualClock,
) -> None:
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_later(1, boom)
    clock.call_later(2, fired.append, "after")
    await clock.advance(2)
    assert fired == ["after"]


async def test_advance_to_next_moves_exactly_to_the_next_timer(clock: VirtualClock) -> None:
    fired: list[float] = []
    clock.call_later(7.25, lambda: fired.append(clock.now()))
    assert await clock.advance_to_next() is True
    assert fired == [7.25]
    assert clock.now() == 7.25
    assert await clock.advance_to_next() is False
    assert clock.now() == 7.25


class PingPong(aiotp.Actor):
    """Two of these bounce a ball with timers of varied delays; every hit goes to `log`."""

    async def init(self, me: str, log: list[Any]) -> None:
        self.me = me
        self.log = log
        self.peer: aiotp.ActorRef | None = None

    async def handle_cast(self, peer: aiotp.ActorRef) -> None:
        self.peer = peer

    async def handle_info(self, msg: Any) -> None:
        n = msg
        self.log.append((self.runtime.clock.now(), self.me, n))
        if n < 30 and self.peer is not None:
            # Varied delays, some equal, so ties and reorderings are exercised.
            self.runtime.send_after(self.peer, (n * 7 % 5) * 0.1, n + 1)
            if n % 4 == 0:
                self.send_after(0.25, n + 100)


async def _scenario() -> list[Any]:
    clock = VirtualClock()
    log: list[Any] = []
    async with aiotp.Runtime(clock=clock) as rt:
        a = await rt.spawn(PingPong, "a", log)
        b = await rt.spawn(PingPong, "b", log)
        await a.cast(b)
        await b.cast(a)
        rt.send_after(a, 0.1, 0)
        rt.send_after(b, 0.1, 0)
        for _ in range(8):
            await clock.advance(0.3)
    return log


async def test_the_same_scenario_gives_the_same_event_order_every_run() -> None:
    first = await _scenario()
    second = await _scenario()
    assert len(first) > 25
    assert first == second
    times = [t for t, _, _ in first]
    assert times == sorted(times)  # never out of time order
