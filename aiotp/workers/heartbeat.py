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
`aiotp.VirtualClock` a test catches a hung worker by advancing the clock (``interval``, then
past ``timeout``); a healthy worker's pong is still real I/O, so such a test lets it arrive
before advancing past the deadline.
"""

from __future__ import annotations

import itertools
from typing import Any

from aiotp.errors import AiotpError
from aiotp.runtime import telemetry
from aiotp.runtime.actor import Actor
from aiotp.workers.config import Heartbeat
from aiotp.workers.worker_log import pool_logger

__all__ = ["HeartbeatMonitor", "HeartbeatTimeout"]


class HeartbeatTimeout(AiotpError):
    """A worker missed too many heartbeats in a row and was replaced (an exit reason)."""


class HeartbeatMonitor(Actor):
    async def init(self, handle: Any, config: Heartbeat, pool: str) -> None:
        self.handle = handle
        self.config = config
        self.pool = pool
        self.log = pool_logger(pool)
        self.missed = 0
        self.unhealthy = False  # dependent=False: reported unhealthy, not yet recovered
        self.pings: set[Any] = set()  # aiojobs.Job: pings overlap, each one a runtime job
        self._ids = itertools.count(1)
        self._deadlines: dict[int, Any] = {}  # ping number -> its deadline Timer
        self.send_after(config.interval, "tick")

    async def handle_info(self, msg: Any) -> None:
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] in ("pong", "miss", "gone"):
            # A ping is settled once, by whichever comes first: its pong, its deadline (a timer
            # on the runtime's clock) or the worker's own ping timeout. Later ones are stale.
            deadline = self._deadlines.pop(msg[1], None)
            if deadline is None:
                return
            deadline.cancel()
            msg = msg[0]
        if msg == "tick":
            n = next(self._ids)
            # The deadline runs on the runtime's clock, so a test on a VirtualClock crosses it
            # by advancing; the ping itself is real I/O.
            self._deadlines[n] = self.send_after(self.config.timeout, ("miss", n))
            job = await self.runtime.jobs.spawn(
                self._ping(n), name=f"heartbeat of {self.handle.worker_id}"
            )
            self.pings.add(job)
            self.send_after(self.config.interval, "tick")
        elif msg == "pong":
            missed, self.missed = self.missed, 0
            if self.unhealthy:
                self.unhealthy = False
                self._report("recovered", missed)
        elif msg == "miss":
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
        # bookkeeping in the worker handle). On a virtual clock only the deadline timer
        # counts: real seconds of a loaded machine must not become misses the test never
        # advanced to.
        timeout = None if self.runtime.clock.virtual else self.config.timeout
        try:
            await self.handle.ping(timeout)
        except TimeoutError:  # CallTimeout derives from it
            self.ref.send(("miss", n))
        except Exception:
            self.ref.send(("gone", n))  # the worker is gone; its own actor reacts to that
        else:
            self.ref.send(("pong", n))
        finally:
            self.pings = {job for job in self.pings if not job.closed}

    async def terminate(self, reason: Any) -> None:
        await self._close_pings()

    async def _close_pings(self) -> None:
        pings, self.pings = self.pings, set()
        for job in pings:
            await job.close(timeout=1.0)
