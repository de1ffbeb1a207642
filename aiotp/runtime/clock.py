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
real I/O: a task blocked on a worker process or a thread is blocked, whatever it waits for.

It is not a patched event loop (``loop.time()`` and ``asyncio.sleep`` keep real time), so
libraries and worker I/O behave as in production; only aiotp's own time-based features move.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiotp.errors import AiotpError

__all__ = ["Clock", "ClockError", "RealClock", "TimerHandle", "VirtualClock"]

# A settle gives up waiting for the loop to go quiet after this many turns: a task that yields
# without ever blocking (a busy ``await asyncio.sleep(0)`` loop) must not hang `advance`.
_MAX_SETTLE_TURNS = 10_000
# Timers firing at one instant, each setting another at that instant, are a loop that never
# lets time move: past this many in one `advance`, it is refused as a bug.
_MAX_SAME_INSTANT = 100_000


class ClockError(AiotpError):
    """A clock was misused: advancing a real clock, a negative or non-finite advance, or two
    `advance` calls at once. Nothing moved; the clock's time is what it was."""


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
        return asyncio.get_running_loop().call_later(delay, callback, *args)

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

    __slots__ = ("_args", "_callback", "_cancelled", "_clock", "_context", "_fired", "_when")

    def __init__(
        self, clock: VirtualClock, when: float, callback: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        self._clock = clock
        self._when = when
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
        when = self._now + max(float(delay), 0.0)
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
        non-finite amount, or while another `advance` of this clock runs.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ClockError(f"advance takes seconds as a number, got {seconds!r}")
        if not _finite(seconds) or seconds < 0:
            raise ClockError(f"cannot advance by {seconds!r}: time only moves forward")
        if self._advancing:
            raise ClockError("this clock is already being advanced (by another task)")
        self._advancing = True
        try:
            target = self._now + seconds
            await _settle()
            same_instant = 0
            heap = self._heap
            while heap and heap[0][0] <= target:
                when, _, timer = heapq.heappop(heap)
                if timer._cancelled:
                    continue
                same_instant = same_instant + 1 if when == self._now else 0
                if same_instant > _MAX_SAME_INSTANT:
                    raise ClockError(
                        f"more than {_MAX_SAME_INSTANT} timers fired at t={when:g}, each "
                        "setting another for the same instant: time can never move on"
                    )
                self._now = max(self._now, when)
                self._live -= 1
                timer._fired = True  # a late cancel() is a no-op and counts nothing
                timer._run()
                await _settle()
            self._now = max(self._now, target)
        finally:
            self._advancing = False

    async def advance_to_next(self) -> bool:
        """Advance exactly to the next pending timer and fire it (and whatever else is due
        then); False, without moving, when no timer is pending."""
        deadline = self.next_deadline()
        if deadline is None:
            return False
        await self.advance(max(deadline - self._now, 0.0))
        return True


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _blocked(task: asyncio.Task[Any]) -> bool:
    """True when `task` waits on a future that is not done yet (it cannot run on its own)."""
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()


async def _settle() -> None:
    """Let the loop run until no task but ours can run: each other task is blocked on a future
    that is not done (a mailbox, a virtual timer, real I/O). Two quiet turns in a row are
    needed, so that a plain callback queued by the last runnable task (a waker) has run too.

    Reads the tasks' ``_fut_waiter`` (present on asyncio's and uvloop's tasks alike); bounded
    by `_MAX_SETTLE_TURNS` turns of the loop.
    """
    current = asyncio.current_task()
    quiet = 0
    for _ in range(_MAX_SETTLE_TURNS):
        await asyncio.sleep(0)
        if any(t is not current and not t.done() and not _blocked(t) for t in asyncio.all_tasks()):
            quiet = 0
            continue
        quiet += 1
        if quiet >= 2:
            return
