"""Actors, links and monitors: spawn, crash one, and watch the Down and Exit messages arrive.

Run it alone with ``python examples/actors_tour.py``; `examples/demo.py` runs it as one part
of the product tour.
"""

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
        raise ValueError(f"unknown call {msg!r}")

    async def handle_cast(self, msg: Any) -> None:
        self.n += msg


class Watcher(aiotp.Actor):
    """Traps exits and monitors others; reports each Down/Exit through a queue."""

    async def init(self, out: asyncio.Queue[Any]) -> None:
        self.trap_exit = True
        self.out = out

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        op, target = msg
        if op == "link":
            self.link(target)
        elif op == "monitor":
            self.monitor(target)
        return "ok"

    async def handle_info(self, msg: Any) -> None:
        await self.out.put(msg)


def describe(msg: Any) -> str:
    if isinstance(msg, aiotp.Down):
        return f"Down  from {msg.actor.name!r}: reason={msg.reason!r}"
    if isinstance(msg, aiotp.Exit):
        return f"Exit  from {msg.sender.name if msg.sender else None!r}: reason={msg.reason!r}"
    return repr(msg)


async def main(rt: aiotp.Runtime, say: Any = print) -> None:
    events: asyncio.Queue[Any] = asyncio.Queue()
    counter = await rt.spawn(Counter, 5, name="counter")
    await counter.cast(2)
    say(f"counter says {await rt.call('counter', 'get')} (5 + a cast of 2)")

    watcher = await rt.spawn(Watcher, events, name="watcher")
    doomed = await rt.spawn(Counter, name="doomed")
    await watcher.call(("link", doomed))
    await watcher.call(("monitor", doomed))
    say("watcher links to and monitors 'doomed'; now we ask 'doomed' for something it can't do")
    try:
        await doomed.call("divide by zero")
    except ValueError as exc:
        say(f"the caller got the crash as an exception: {exc!r}")
    for _ in range(2):
        say("watcher saw: " + describe(await asyncio.wait_for(events.get(), 5)))

    victim = await rt.spawn(Counter, name="victim")
    await watcher.call(("monitor", victim))
    rt.exit(victim, "kill")
    say("killed 'victim' with the untrappable 'kill':")
    say("watcher saw: " + describe(await asyncio.wait_for(events.get(), 5)))
    try:
        await rt.call("victim", "get")
    except aiotp.NoProc as exc:
        say(f"calling it now fails at once: NoProc ({exc})")
    say(f"'counter' is unaffected and still says {await counter.call('get')}")


if __name__ == "__main__":
    aiotp.run(main)
