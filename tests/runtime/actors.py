"""Actors used across the runtime tests."""

from __future__ import annotations

import asyncio
from typing import Any

import aiotp


class Counter(aiotp.Actor):
    async def init(self, start: int = 0) -> None:
        self.n = start

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        if msg == "get":
            return self.n
        if msg == "crash":
            raise ValueError("asked to crash")
        if msg == "stop":
            self.stop("normal")
            return "stopping"
        raise ValueError(f"unknown call {msg!r}")

    async def handle_cast(self, msg: Any) -> None:
        self.n += msg


class Recorder(aiotp.Actor):
    """Keeps every info message; `wait_for(n)` resolves once n have arrived."""

    async def init(self, trap: bool = False) -> None:
        self.trap_exit = trap
        self.seen: list[Any] = []
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def handle_info(self, msg: Any) -> None:
        self.seen.append(msg)
        for n, fut in list(self.waiters):
            if len(self.seen) >= n and not fut.done():
                fut.set_result(None)

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        op, *rest = msg
        if op == "seen":
            return list(self.seen)
        if op == "wait_for":
            n = rest[0]
            if len(self.seen) >= n:
                return list(self.seen)
            fut = asyncio.get_running_loop().create_future()
            self.waiters.append((n, fut))
            fut.add_done_callback(lambda _f: caller.reply(list(self.seen)))
            return aiotp.NOREPLY
        if op == "link":
            self.link(rest[0])
            return None
        if op == "monitor":
            return self.monitor(rest[0])
        if op == "spawn_linked":
            return await self.runtime.spawn(rest[0], *rest[1:], link=True)
        raise ValueError(msg)


class Sleeper(aiotp.Actor):
    """Handles ("sleep", seconds) calls; records terminate."""

    async def init(self, trap: bool = False, events: list[Any] | None = None) -> None:
        self.trap_exit = trap
        self.events = events if events is not None else []

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        await asyncio.sleep(msg[1])
        return "slept"

    async def terminate(self, reason: Any) -> None:
        self.events.append(("terminate", reason))
