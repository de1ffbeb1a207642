"""The heartbeat monitor: an actor linked to each worker that kills it when it stops answering.

Every ``interval`` seconds it pings the worker; each ping that gets no pong within ``timeout``
is a miss, a pong resets the count, and ``max_missed`` misses in a row make the monitor exit with
`HeartbeatTimeout`. The link does the rest: the worker dies with that reason (its OS process is
killed, or its stuck threads abandoned), and the pool's supervisor starts a replacement. Pings
overlap, so a hung worker is caught within about ``interval * (max_missed - 1) + timeout``.

Pings are answered by the worker's own execution lane (behind the requests it is running), so a
worker whose every thread is stuck, whether in a tool that holds the GIL or one that sleeps
forever, is caught; a tool that legitimately runs longer than ``timeout`` on every thread of a
worker looks the same, so size the heartbeat for your slowest tool, pass ``heartbeat=None``, or
make it ``Heartbeat(dependent=False)``.

``dependent=False`` keeps the pings but not the kill: at ``max_missed`` misses the worker is
reported unhealthy (one WARNING line and the telemetry event
``("aiotp", "pool", "heartbeat", "unhealthy")``) and keeps serving; its first pong after that
is reported as a recovery (INFO and ``("aiotp", "pool", "heartbeat", "recovered")``). The
pool still routes requests to it meanwhile: "not dependent" means its health is observed,
not acted on. A worker that really died is still replaced (its actor sees the process end).

    await rt.start_pool("ml", MLAdapter, profile="process",
                        heartbeat=aiotp.Heartbeat(timeout=30.0, dependent=False))

Time: the ticks and each ping's deadline are timers on the runtime's clock. On a
`aiotp.VirtualClock` the deadlines are virtual but the ping is still real I/O, and ``advance``
does not wait for real I/O: one ``advance(3600)`` fires every tick and every deadline within
microseconds of real time. Two rules keep a healthy worker alive there and a hung one caught:

- one ping at a time: a tick while a ping is still in flight waits on that ping instead of
  sending another (its pong answers every tick it covers). The worker's answer does not depend
  on how fast it drains a backlog of pings, and a hung worker holds one ping, not one per tick.
- a real grace: a deadline that passes while its ping is still in flight becomes a miss only
  once the ping has been out for ``min(timeout, VIRTUAL_GRACE_CAP)`` real seconds. A pong
  within that counts as a pong.

So on a virtual clock a hung worker is counted missed (and killed) up to that grace in real time
after the test advanced past its deadline: such a test waits for the outcome (polling), it does
not assert it the moment ``advance`` returns. On real time neither rule applies: pings overlap,
each with its own timeout, and a deadline is a miss at once.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from aiotp.errors import AiotpError
from aiotp.runtime import telemetry
from aiotp.runtime.actor import Actor
from aiotp.workers.config import Heartbeat
from aiotp.workers.worker_log import pool_logger

__all__ = ["VIRTUAL_GRACE_CAP", "HeartbeatMonitor", "HeartbeatTimeout"]

#: On a virtual clock, the most real seconds a ping in flight is given past its (virtual)
#: deadline before it counts as missed: the grace is ``min(timeout, VIRTUAL_GRACE_CAP)``. Long
#: enough for a loaded machine to carry a healthy worker's pong; short enough that a test of a
#: hung worker does not wait a production-sized timeout.
VIRTUAL_GRACE_CAP = 5.0


class HeartbeatTimeout(AiotpError):
    """A worker missed too many heartbeats in a row and was replaced (an exit reason)."""


class _Ping:
    """One ping in flight and the ticks its answer settles (several only on a virtual clock)."""

    __slots__ = ("job", "sent", "ticks")

    def __init__(self, sent: float) -> None:
        self.job: Any = None  # aiojobs.Job, set once spawned
        self.sent = sent  # loop.time() when it went out: the grace counts real time
        self.ticks: set[int] = set()


class HeartbeatMonitor(Actor):
    async def init(self, handle: Any, config: Heartbeat, pool: str) -> None:
        self.handle = handle
        self.config = config
        self.pool = pool
        self.log = pool_logger(pool)
        self.missed = 0
        self.unhealthy = False  # dependent=False: reported unhealthy, not yet recovered
        self.virtual = self.runtime.clock.virtual
        self.grace = min(config.timeout, VIRTUAL_GRACE_CAP)
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        # A tick is open until settled once, by whichever comes first: its ping's answer or its
        # deadline (a timer on the runtime's clock; on a virtual one, plus the real grace).
        self._open: dict[int, Any] = {}  # tick -> its deadline Timer
        self._of: dict[int, _Ping] = {}  # open tick -> the ping whose answer settles it
        self._graces: dict[int, asyncio.TimerHandle] = {}  # tick -> its real grace timer
        self._pings: dict[int, _Ping] = {}  # ping id -> ping in flight
        self._current: _Ping | None = None  # virtual clock: the ping new ticks wait on
        self.send_after(config.interval, "tick")

    @property
    def in_flight(self) -> int:
        """Pings sent and not answered yet (on a virtual clock at most one)."""
        return len(self._pings)

    async def handle_info(self, msg: Any) -> None:
        if msg == "tick":
            await self._tick()
            self.send_after(self.config.interval, "tick")
        elif isinstance(msg, tuple) and len(msg) == 2:
            kind, n = msg
            if kind == "deadline":
                self._deadline(n)
            elif kind == "late":  # the real grace of a virtual deadline ran out
                if self._settle(n):
                    self._miss()
            elif kind in ("pong", "miss", "gone"):
                self._answered(kind, n)

    async def _tick(self) -> None:
        n = next(self._ids)
        self._open[n] = self.send_after(self.config.timeout, ("deadline", n))
        ping = self._current
        if ping is None:
            ping = _Ping(self._loop.time())
            self._pings[n] = ping
            if self.virtual:
                self._current = ping
            ping.job = await self.runtime.jobs.spawn(
                self._ping(n), name=f"heartbeat of {self.handle.worker_id}"
            )
        ping.ticks.add(n)
        self._of[n] = ping

    def _deadline(self, n: int) -> None:
        ping = self._of.get(n)
        if ping is None:
            return  # answered already
        if self.virtual:
            if ping.job is not None and ping.job.closed:
                # Its answer is already in the mailbox (sent before the job ended): after it.
                self.ref.send(("late", n))
                return
            remaining = ping.sent + self.grace - self._loop.time()
            if remaining > 0:
                self._graces[n] = self._loop.call_later(remaining, self.ref.send, ("late", n))
                return
        self._settle(n)
        self._miss()

    def _answered(self, kind: str, ping_id: int) -> None:
        ping = self._pings.pop(ping_id, None)
        if ping is None:
            return
        if self._current is ping:
            self._current = None
        settled = [t for t in sorted(ping.ticks) if self._settle(t)]
        if not settled:
            return  # every tick it covered was missed already: a stale answer
        if kind == "pong":
            self._pong()
        elif kind == "miss":  # the ping's own timeout (real time: one tick per ping)
            for _ in settled:
                self._miss()
        # "gone": the worker itself is gone; its own actor reacts to that

    def _settle(self, n: int) -> bool:
        """Close tick `n` (False when it was closed already), dropping its timers."""
        deadline = self._open.pop(n, None)
        if deadline is None:
            return False
        deadline.cancel()
        grace = self._graces.pop(n, None)
        if grace is not None:
            grace.cancel()
        ping = self._of.pop(n, None)
        if ping is not None:
            ping.ticks.discard(n)
        return True

    def _pong(self) -> None:
        missed, self.missed = self.missed, 0
        if self.unhealthy:
            self.unhealthy = False
            self._report("recovered", missed)

    def _miss(self) -> None:
        self.missed += 1
        telemetry.execute(
            ("aiotp", "pool", "heartbeat", "missed"),
            {"missed": self.missed},
            {"pool": self.pool, "worker_id": self.handle.worker_id},
        )
        if self.missed >= self.config.max_missed and not self.config.dependent:
            if not self.unhealthy:  # one report per episode, not one per missed ping
                self.unhealthy = True
                self._report("unhealthy", self.missed)
        elif self.missed >= self.config.max_missed:
            self.log.warning(
                "pool %r: worker %s (pid %s) missed %d heartbeats; killing and replacing it",
                self.pool,
                self.handle.worker_id,
                self.handle.pid,
                self.missed,
            )
            self.stop(
                HeartbeatTimeout(
                    f"worker {self.handle.worker_id} of pool {self.pool!r} missed "
                    f"{self.missed} heartbeats (timeout {self.config.timeout} s)"
                )
            )

    def _report(self, state: str, missed: int) -> None:
        handle = self.handle
        if state == "unhealthy":
            self.log.warning(
                "pool %r: worker %s (pid %s) missed %d heartbeats; keeping it (dependent=False)",
                self.pool,
                handle.worker_id,
                handle.pid,
                missed,
            )
        else:
            self.log.info(
                "pool %r: worker %s (pid %s) answers heartbeats again after %d missed",
                self.pool,
                handle.worker_id,
                handle.pid,
                missed,
            )
        telemetry.execute(
            ("aiotp", "pool", "heartbeat", state),
            {"missed": missed},
            {"pool": self.pool, "worker_id": handle.worker_id, "pid": handle.pid},
        )

    async def _ping(self, n: int) -> None:
        # On real time the worker's own ping timeout stays (it also frees the request's
        # bookkeeping in the worker handle). On a virtual clock only the deadline (and its
        # real grace) counts: real seconds of a loaded machine must not become misses the test
        # never advanced to.
        timeout = None if self.virtual else self.config.timeout
        try:
            await self.handle.ping(timeout)
        except TimeoutError:  # CallTimeout derives from it
            self.ref.send(("miss", n))
        except Exception:
            self.ref.send(("gone", n))  # the worker is gone; its own actor reacts to that
        else:
            self.ref.send(("pong", n))

    async def terminate(self, reason: Any) -> None:
        for grace in self._graces.values():
            grace.cancel()
        self._graces.clear()
        pings, self._pings, self._current = list(self._pings.values()), {}, None
        for ping in pings:
            if ping.job is not None:
                await ping.job.close(timeout=1.0)
