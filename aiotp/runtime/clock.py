"""Clocks: the time a runtime's timers, restart windows, session TTLs and heartbeats run on.

A test of "3 restarts in 5 s" or "a session expires after an hour" should not take five seconds
or an hour, nor pass or fail with the machine's load. So a runtime reads that time through one
clock, ``rt.clock``:

- `RealClock` (the default): the loop's own timers and ``time.monotonic``. It costs nothing: the
  runtime hands ``send_after`` straight to ``loop.call_later``, as it did before clocks existed.
- `VirtualClock`: simulated time that stands still until the test moves it::

      clock = aiotp.VirtualClock()
      async with aiotp.Runtime(clock=clock) as rt:
          ref = await rt.spawn(Reminder)
          await ref.cast(("remind_in", 3600))
          await clock.advance(3600)      # milliseconds; the reminder has been handled on return

What runs on the runtime's clock: every ``send_after`` (so everything built on actor timers:
heartbeat ticks and deadlines, pool ``ttl`` recycling, memory sampling, a replacement's
back-off), supervisors' restart-intensity windows, and the TTLs and background sweeps of the
runtime's session store. What stays on real time: call timeouts, ``init_timeout``, shutdown
timeouts, a pool's checkout and queue timeouts, and worker I/O (starting, a ping's transport,
stop grace). Those bound waits on real work; on a virtual clock a test that forgot to advance
would hang on them instead of failing.

`VirtualClock.advance` fires every timer due, in time order (timers due at the same instant in
the order they were set), and after each one lets the loop run until every task is blocked
again: an actor's reaction to a timer (a reply, a new timer, a restart) happens before the next
timer fires, and a timer that reaction sets fires in the same `advance` if it is due by then.
The same scenario therefore gives the same order of events on every run. It does not wait for
real I/O: a task blocked on a worker process or a thread is blocked, whatever it waits for (so
what waits on real I/O past a virtual deadline, a heartbeat's ping, gives it a bounded real grace
of its own: aiotp.workers.heartbeat). A task that never blocks (a busy ``await asyncio.sleep(0)``
loop) would keep every settle from ending: the first settle that gives up on it names it in one
WARNING on the ``aiotp.clock`` logger, and from then on this clock does not wait for it.

Time is a float: ``advance(0.1)`` ten times reads 0.9999999999999999, not 1.0, and a timer due
at 1.0 has not fired. Advance by amounts that add up exactly (binary fractions: 0.25, 0.5, 1),
or to an absolute time with `VirtualClock.advance_to`.

It is not a patched event loop (``loop.time()`` and ``asyncio.sleep`` keep real time), so
libraries and worker I/O behave as in production; only aiotp's own time-based features move.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import math
import numbers
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from aiotp.errors import AiotpError

__all__ = ["Clock", "ClockError", "RealClock", "TimerHandle", "VirtualClock"]

_log = logging.getLogger("aiotp.clock")

# A settle gives up waiting for the loop to go quiet after this many turns: a task that yields
# without ever blocking (a busy ``await asyncio.sleep(0)`` loop) must not hang `advance`. A task
# runnable in at least half of them is taken for such a loop (named once, then not waited for).
_MAX_SETTLE_TURNS = 10_000
# Timers set during an `advance` while time stood at the instant they are due for (a reaction
# setting a zero-delay timer, which sets another, ...) are a loop that never lets time move:
# past this many at one instant, it is refused as a bug. Timers set earlier for that instant
# (any number of independent ``call_later(1.0)``) do not count.
_MAX_SAME_INSTANT = 100_000


class ClockError(AiotpError):
    """A clock was misused: advancing a real clock, a negative or non-finite advance (or one
    whose target time overflows to infinity), or two `advance` calls at once. Nothing moved;
    the clock's time is what it was. (Also raised, after time moved, by a timer loop that never
    lets time move on: see ``_MAX_SAME_INSTANT``.)"""


class TimerHandle(Protocol):
    """What ``call_later`` returns on any clock (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...

    def cancelled(self) -> bool: ...


class Clock:
    """The time source of one runtime (see the module docstring). Not for direct use: pick
    `RealClock` or `VirtualClock`."""

    #: True for clocks whose time only moves when a test advances it.
    virtual = False

    def now(self) -> float:
        """Seconds on this clock (monotonic; only differences mean something)."""
        raise NotImplementedError

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` on the loop once `delay` seconds of this clock passed."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` of this clock passed."""
        raise NotImplementedError

    async def advance(self, seconds: float) -> None:
        """Move time forward (virtual clocks only; a real clock raises `ClockError`)."""
        raise NotImplementedError


class RealClock(Clock):
    """Wall time: the loop's timers and ``time.monotonic`` (what aiotp used before clocks)."""

    # A staticmethod, so ``rt.clock.now is time.monotonic``: a store built with the default
    # clock and a runtime on real time agree without a wrapper call on every read.
    now = staticmethod(time.monotonic)

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> TimerHandle:
        return asyncio.get_running_loop().call_later(_delay(delay), callback, *args)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def advance(self, seconds: float) -> None:
        raise ClockError(
            "this runtime runs on real time and cannot be advanced; "
            "pass aiotp.Runtime(clock=aiotp.VirtualClock()) to control time in a test"
        )

    def __repr__(self) -> str:
        return "<RealClock>"


class VirtualTimer:
    """One pending ``call_later`` of a `VirtualClock`."""

    __slots__ = (
        "_args",
        "_callback",
        "_cancelled",
        "_chained",
        "_clock",
        "_context",
        "_fired",
        "_when",
    )

    def __init__(
        self, clock: VirtualClock, when: float, callback: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        self._clock = clock
        self._when = when
        # Set by a reaction during an advance, due at the very instant it was set: the kind of
        # timer that, chained, never lets time move (_MAX_SAME_INSTANT).
        self._chained = clock._advancing and when == clock._now
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._fired = False
        # Run in the context it was set from, as loop.call_later does.
        self._context = contextvars.copy_context()

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        if not (self._cancelled or self._fired):
            self._cancelled = True
            self._clock._live -= 1

    def cancelled(self) -> bool:
        return self._cancelled

    def _run(self) -> None:
        try:
            self._context.run(self._callback, *self._args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            # As the loop reports a callback that raised: the clock and the other timers go on.
            asyncio.get_running_loop().call_exception_handler(
                {"message": f"Exception in virtual timer {self!r}", "exception": exc}
            )

    def __repr__(self) -> str:
        state = " cancelled" if self._cancelled else " fired" if self._fired else ""
        return f"<VirtualTimer at {self._when:g}{state} {self._callback!r}>"


class VirtualClock(Clock):
    """Simulated time for tests: it stands still until `advance` moves it (module docstring).

    ``start`` is the time `now()` reads before the first advance. One clock may serve several
    runtimes of one loop; they then share its time.
    """

    virtual = True

    def __init__(self, start: float = 0.0) -> None:
        if not _finite(start):
            raise ClockError(f"a clock must start at a finite time, got {start!r}")
        self._now = float(start)
        self._heap: list[tuple[float, int, VirtualTimer]] = []
        self._seq = itertools.count()  # ties at one instant fire in the order they were set
        self._live = 0  # timers set and neither fired nor cancelled
        self._advancing = False
        # Tasks a settle found never blocking (busy loops): named once, then not waited for.
        self._busy: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"<VirtualClock now={self._now:g} pending={self._live}>"

    def now(self) -> float:
        return self._now

    def pending(self) -> int:
        """Timers set on this clock that have neither fired nor been cancelled."""
        return self._live

    def next_deadline(self) -> float | None:
        """When the next pending timer is due, or None when none is."""
        heap = self._heap
        while heap and heap[0][2]._cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> TimerHandle:
        # A negative or zero delay means "as soon as time is next looked at", as on the loop.
        # NaN or infinity is refused: a NaN timer sorts nowhere and would freeze every advance.
        when = self._now + max(_delay(delay), 0.0)
        timer = VirtualTimer(self, when, callback, args)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        self._live += 1
        return timer

    async def sleep(self, seconds: float) -> None:
        """Return once the clock passed `seconds` from now (at once, after one yield, for 0)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self.call_later(seconds, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing every timer due on the way, in order.

        Before the first timer and after each one the loop runs until every other task is
        blocked, so what a timer sets off is finished (or waiting on real I/O) before time
        moves on. ``advance(0)`` fires what is due now. `ClockError` for a negative or
        non-finite amount, one whose target overflows to infinity, or while another `advance`
        of this clock runs. Amounts add up as floats do (module docstring: `advance_to`).
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ClockError(f"advance takes seconds as a number, got {seconds!r}")
        if not _finite(seconds) or seconds < 0:
            raise ClockError(f"cannot advance by {seconds!r}: time only moves forward")
        await self._run_until(self._now + seconds, f"advance by {seconds!r}")

    async def advance_to(self, when: float) -> None:
        """Move time forward to exactly `when` (as `advance`): ``now()`` then reads `when`,
        with no float drift from adding up steps. `ClockError` if `when` is in the past or is
        not a finite number."""
        if isinstance(when, bool) or not isinstance(when, int | float):
            raise ClockError(f"advance_to takes a time as a number, got {when!r}")
        if not _finite(when) or when < self._now:
            raise ClockError(f"cannot advance to {when!r}: now is {self._now!r}")
        await self._run_until(float(when), f"advance to {when!r}")

    async def _run_until(self, target: float, what: str) -> None:
        if not math.isfinite(target):
            raise ClockError(f"cannot {what}: from {self._now!r} that overflows to {target!r}")
        if self._advancing:
            raise ClockError("this clock is already being advanced (by another task)")
        self._advancing = True
        try:
            await self._settle()
            same_instant = 0
            heap = self._heap
            while heap and heap[0][0] <= target:
                when, _, timer = heapq.heappop(heap)
                if timer._cancelled:
                    continue
                if when > self._now:
                    self._now = when
                    same_instant = 0
                if timer._chained:
                    same_instant += 1
                    if same_instant > _MAX_SAME_INSTANT:
                        raise ClockError(
                            f"more than {_MAX_SAME_INSTANT} timers fired at t={when:g}, each "
                            "set for that very instant while time stood at it: time can never "
                            "move on"
                        )
                self._live -= 1
                timer._fired = True  # a late cancel() is a no-op and counts nothing
                timer._run()
                await self._settle()
            self._now = max(self._now, target)
        finally:
            self._advancing = False

    async def _settle(self) -> None:
        """Let the loop run until no task but ours can run: each other task is blocked on a
        future that is not done (a mailbox, a virtual timer, real I/O). Two quiet turns in a
        row are needed, so that a plain callback queued by the last runnable task (a waker)
        has run too.

        Reads the tasks' ``_fut_waiter`` (present on asyncio's and uvloop's tasks alike);
        bounded by `_MAX_SETTLE_TURNS` turns of the loop. A task that was runnable in half of
        them or more never blocks: it is named in one WARNING and not waited for again (else
        each settle of every later advance would burn those turns too).
        """
        current = asyncio.current_task()
        busy = self._busy
        runnable: dict[asyncio.Task[Any], int] = {}
        quiet = 0
        for _ in range(_MAX_SETTLE_TURNS):
            await asyncio.sleep(0)
            running = False
            for t in asyncio.all_tasks():
                if t is not current and not t.done() and not _blocked(t) and t not in busy:
                    runnable[t] = runnable.get(t, 0) + 1
                    running = True
            if running:
                quiet = 0
                continue
            quiet += 1
            if quiet >= 2:
                return
        found = [t for t, n in runnable.items() if n * 2 >= _MAX_SETTLE_TURNS and not t.done()]
        busy.update(found)
        _log.warning(
            "VirtualClock: %s kept running for %d turns of the loop without ever blocking "
            "(a busy loop such as `while True: await asyncio.sleep(0)`); advance no longer "
            "waits for %s, so what %s does is not ordered with the timers",
            ", ".join(repr(t.get_name()) for t in found) or "some task",
            _MAX_SETTLE_TURNS,
            "it" if len(found) == 1 else "them",
            "it" if len(found) == 1 else "they",
        )

    async def advance_to_next(self) -> bool:
        """Advance exactly to the next pending timer and fire it (and whatever else is due
        then); False, without moving, when no timer is pending."""
        deadline = self.next_deadline()
        if deadline is None:
            return False
        await self.advance_to(max(deadline, self._now))
        return True


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _delay(delay: Any) -> float:
    """A timer's delay as a float: TypeError for what is not a number, ValueError for NaN or
    infinity (a NaN timer sorts nowhere, an infinite one never fires: both are bugs)."""
    if not isinstance(delay, numbers.Real):
        raise TypeError(f"a timer's delay must be a number of seconds, got {delay!r}")
    value = float(delay)
    if not math.isfinite(value):
        raise ValueError(f"a timer's delay must be finite, got {delay!r}")
    return value


def _blocked(task: asyncio.Task[Any]) -> bool:
    """True when `task` waits on a future that is not done yet (it cannot run on its own)."""
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()
