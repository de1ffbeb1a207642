"""Children for the supervision tests: they log their starts and stops to a shared list."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiotp


class Child(aiotp.Actor):
    async def init(self, name: str, log: list[Any], hang_on_stop: float = 0.0) -> None:
        self.label = name
        self.log = log
        self.hang_on_stop = hang_on_stop
        log.append(("start", name))

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        if msg == "crash":
            raise RuntimeError(f"{self.label} crashed")
        if msg == "exit_normal":
            self.stop("normal")
            return "ok"
        if msg == "exit_shutdown":
            self.stop(("shutdown", "done"))
            return "ok"
        return self.label

    async def terminate(self, reason: Any) -> None:
        if self.hang_on_stop:
            await asyncio.sleep(self.hang_on_stop)
        self.log.append(("stop", self.label))


class FailsOnInit(aiotp.Actor):
    async def init(self, message: str = "cannot start") -> None:
        raise RuntimeError(message)


def spec(name: str, log: list[Any], **kw: Any) -> aiotp.ChildSpec:
    hang = kw.pop("hang_on_stop", 0.0)
    return aiotp.ChildSpec(name, Child, args=(name, log, hang), **kw)


async def crash(sup: aiotp.SupervisorRef, child_id: str) -> aiotp.ActorRef:
    """Crash a child and wait until the supervisor has dealt with it; returns the old ref."""
    old = {c.id: c.ref for c in await sup.which_children()}[child_id]
    assert old is not None
    with contextlib.suppress(RuntimeError):
        await old.call("crash")
    while old.alive:
        await asyncio.sleep(0)
    # The supervisor handled the Exit before this call, or gave up and exited (intensity):
    # the caller checks which.
    with contextlib.suppress(aiotp.ActorExited, aiotp.NoProc):
        await sup.count_children()
    return old
