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


# -- refused inputs and limits (hostile review) --------------------------------------------


class After(aiotp.Actor):
    """Sets a timer of the delay it is cast; records what fires and what send_after raised."""

    async def init(self, log: list[Any]) -> None:
        self.log = log

    async def handle_cast(self, msg: Any) -> None:
        delay, what = msg
        try:
            self.send_after(delay, what)
        except (TypeError, ValueError) as exc:
            self.log.append((type(exc).__name__, str(exc)))

    async def handle_info(self, msg: Any) -> None:
        self.log.append((self.runtime.clock.now(), msg))


@pytest.mark.parametrize(
    ("bad", "error"),
    [(math.nan, ValueError), (math.inf, ValueError), (-1.0, ValueError), ("1", TypeError)],
)
async def test_send_after_refuses_a_delay_that_would_freeze_or_break_time(
    vrt: aiotp.Runtime, clock: VirtualClock, bad: Any, error: type[Exception]
) -> None:
    log: list[Any] = []
    a = await vrt.spawn(After, log)
    await a.cast((bad, "bad"))
    await a.cast((1.0, "one"))
    await a.cast((2.0, "two"))
    await clock.advance(0)
    assert log[0][0] == error.__name__ and repr(bad) in log[0][1]
    # Time still moves: before, a NaN timer sorted first and stopped every later one.
    await clock.advance(10)
    assert log[1:] == [(1.0, "one"), (2.0, "two")]
    assert clock.now() == 10.0 and clock.pending() == 0
    with pytest.raises(error, match="delay"):
        vrt.send_after(a, bad, "direct")
    await vrt.stop(a)


@pytest.mark.parametrize(
    ("bad", "error"), [(math.nan, ValueError), (-math.inf, ValueError), (None, TypeError)]
)
async def test_clock_call_later_refuses_non_finite_or_non_numeric_delays(
    clock: VirtualClock, bad: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=repr(bad)):
        clock.call_later(bad, print)
    with pytest.raises(error, match=repr(bad)):
        RealClock().call_later(bad, print)
    assert clock.pending() == 0
    fired: list[float] = []
    clock.call_later(1, lambda: fired.append(clock.now()))
    await clock.advance(5)
    assert fired == [1.0]


async def test_independent_timers_at_one_instant_are_not_a_loop(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guard's limit made small so the test is quick; the rule is what is checked.
    import aiotp.runtime.clock as clock_module

    monkeypatch.setattr(clock_module, "_MAX_SAME_INSTANT", 100)
    fired: list[int] = []
    for i in range(102):  # set at 0 for 1: load, not a loop
        clock.call_later(1.0, fired.append, i)
    await clock.advance(1)
    assert fired == list(range(102))

    def again() -> None:  # each one sets the next for the very instant it fires at
        fired.append(-1)
        clock.call_later(0, again)

    clock.call_later(1, again)
    with pytest.raises(ClockError, match="very instant"):
        await clock.advance(5)
    assert fired.count(-1) == 101


async def test_an_advance_that_overflows_to_infinity_is_refused(clock: VirtualClock) -> None:
    await clock.advance(1e308)
    with pytest.raises(ClockError, match="overflows"):
        await clock.advance(1e308)
    assert clock.now() == 1e308
    with pytest.raises(ClockError):
        await clock.advance_to(math.inf)


async def test_advance_to_lands_exactly_where_added_up_steps_drift(clock: VirtualClock) -> None:
    fired: list[float] = []
    clock.call_later(1.0, lambda: fired.append(clock.now()))
    for _ in range(10):
        await clock.advance(0.1)
    assert clock.now() < 1.0 and fired == []  # float drift: 0.9999999999999999
    await clock.advance_to(1.0)
    assert clock.now() == 1.0 and fired == [1.0]
    with pytest.raises(ClockError, match="now is"):
        await clock.advance_to(0.5)
    with pytest.raises(ClockError):
        await clock.advance_to("2")  # type: ignore[arg-type]
    assert clock.now() == 1.0


async def test_a_task_that_never_blocks_is_named_once_and_then_not_waited_for(
    vrt: aiotp.Runtime, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[Any] = []
    a = await vrt.spawn(Log, log)
    stop = False

    async def spinner() -> None:
        while not stop:
            await asyncio.sleep(0)

    spin = asyncio.get_running_loop().create_task(spinner(), name="the-spinner")
    try:
        for i in range(5):
            vrt.send_after(a, 1.0, i)
            await clock.advance(1.0)
    finally:
        stop = True
        await spin
    # Every reaction still ran before time moved on.
    assert log == [(float(i + 1), i) for i in range(5)]
    warnings = [r for r in caplog.records if r.name == "aiotp.clock"]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert "'the-spinner'" in warnings[0].getMessage()
    await vrt.stop(a)
