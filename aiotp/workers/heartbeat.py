"""The heartbeat monitor: an actor linked to each worker that kills it when it stops answering.

Every ``interval`` seconds it pings the worker; each ping that gets no pong within ``timeout``
is a miss, a pong resets the count, and ``max_missed`` misses in a row make the monitor exit with
`HeartbeatTimeout`. The link does the rest: the worker dies with that reason (its OS process is
killed, or its stuck threads abandoned), and the pool's supervisor starts a replacement. Pings
overlap, so a hung worker is caught within about ``interval * (max_missed - 1) + timeout``.

Pings are answered by the worker's own execution lane (behind the requests it is running), so a
worker whose every thread is stuck, whether in a tool that holds the GIL or one that sleeps
forever, is caught; a tool that legitimately runs longer than ``timeout`` on every thread of a
worker looks the same, so size the heartbeat for your slowest tool or pass ``heartbeat=None``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiotp.errors import AiotpError
from aiotp.runtime import telemetry
from aiotp.runtime.actor import Actor
from aiotp.workers.config import Heartbeat

__all__ = ["HeartbeatMonitor", "HeartbeatTimeout"]

_log = logging.getLogger("aiotp.pool")


class HeartbeatTimeout(AiotpError):
    """A worker missed too many heartbeats in a row and was replaced (an exit reason)."""


class HeartbeatMonitor(Actor):
    async def init(self, handle: Any, config: Heartbeat, pool: str) -> None:
        self.handle = handle
        self.config = config
        self.pool = pool
        self.missed = 0
        self.pings: set[Any] = set()  # aiojobs.Job: pings overlap, each one a runtime job
        self.send_after(config.interval, "tick")

    async def handle_info(self, msg: Any) -> None:
        if msg == "tick":
            job = await self.runtime.jobs.spawn(
                self._ping(), name=f"heartbeat of {self.handle.worker_id}"
            )
            self.pings.add(job)
            self.send_after(self.config.interval, "tick")
        elif msg == "pong":
            self.missed = 0
        elif msg == "miss":
            self.missed += 1
            telemetry.execute(
                ("aiotp", "pool", "heartbeat", "missed"),
                {"missed": self.missed},
                {"pool": self.pool, "worker_id": self.handle.worker_id},
            )
            if self.missed >= self.config.max_missed:
                _log.warning(
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

    async def _ping(self) -> None:
        try:
            await self.handle.ping(self.config.timeout)
        except TimeoutError:  # CallTimeout derives from it
            self.ref.send("miss")
        except Exception:
            return  # the worker is gone; its own actor reacts to that
        else:
            self.ref.send("pong")
        finally:
            self.pings = {job for job in self.pings if not job.closed}

    async def terminate(self, reason: Any) -> None:
        await self._close_pings()

    async def _close_pings(self) -> None:
        pings, self.pings = self.pings, set()
        for job in pings:
            await job.close(timeout=1.0)
