"""A small application for the view tests: ``python view_app.py SOCKET``.

A supervisor ``app`` with a named actor ``counter`` and a process pool ``ml`` of 2 workers, a
session, a control socket on SOCKET. Built from a plain Runtime (not aiotp.Application) so the
tests do not depend on the runner. SIGTERM shuts it down gracefully (exit 0).
"""

from __future__ import annotations

import asyncio
import sys

import aiotp
from aiotp.ops.control import serve_control


class Counter(aiotp.Actor):
    async def init(self) -> None:
        self.n = 0

    async def handle_call(self, msg: object, caller: aiotp.Caller) -> int:
        return self.n

    async def handle_cast(self, msg: int) -> None:
        self.n += msg


async def main(rt: aiotp.Runtime) -> None:
    await rt.spawn(
        aiotp.Supervisor,
        [
            aiotp.ChildSpec("counter", Counter, name="counter"),
            aiotp.pool_spec("ml", "view_adapters:Echo", profile="process", size=2),
        ],
        name="app",
    )
    rt.sessions.create("user-1")
    await rt.execute("ml", "echo", {"x": 1})
    async with await serve_control(rt, sys.argv[1]):
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGTERM


if __name__ == "__main__":
    aiotp.run(main, name="view-test-app", shutdown_timeout=5.0)
