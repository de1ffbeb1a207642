"""A two-level supervision tree: a crashing child restarted, then an intensity overflow that
escalates, printed as an indented tree (`which_children` walked) before and after.

Run it alone with ``python examples/supervision_tree.py``; the demo runs it as one part.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiotp


class Service(aiotp.Actor):
    async def init(self, label: str) -> None:
        self.label = label

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        if msg == "crash":
            raise RuntimeError(f"{self.label} crashed on purpose")
        return self.label


async def render(sup: aiotp.SupervisorRef, indent: int = 0) -> list[str]:
    lines = []
    for child in await sup.which_children():
        ref = child.ref
        state = f"#{ref.id}" if ref is not None else "not running"
        lines.append(f"{'    ' * indent}{child.id} ({child.type}, {child.restart}) {state}")
        if isinstance(ref, aiotp.SupervisorRef):
            lines.extend(await render(ref, indent + 1))
    return lines


async def crash(ref: aiotp.ActorRef) -> None:
    with contextlib.suppress(RuntimeError):
        await ref.call("crash")
    while ref.alive:
        await asyncio.sleep(0)


async def main(rt: aiotp.Runtime, say: Any = print) -> None:
    workers = aiotp.ChildSpec(
        "workers",
        aiotp.Supervisor,
        args=([aiotp.ChildSpec(n, Service, args=(n,)) for n in ("parser", "indexer")],),
        kwargs={"strategy": "one_for_one", "max_restarts": 2, "max_seconds": 5.0},
        type="supervisor",
    )
    app = await rt.spawn(
        aiotp.Supervisor,
        [aiotp.ChildSpec("db", Service, args=("db",)), workers],
        strategy="one_for_one",
        max_restarts=3,
        name="app",
    )
    say("the tree:")
    for line in await render(app):
        say("  " + line)
    inner = (await app.which_children())[1].ref
    assert isinstance(inner, aiotp.SupervisorRef)
    parser = (await inner.which_children())[0].ref
    assert parser is not None
    await crash(parser)
    await inner.count_children()
    new_parser = (await inner.which_children())[0].ref
    say(f"'parser' crashed; its supervisor restarted it: #{parser.id} -> #{new_parser.id}")
    say("now 'indexer' crashes until the inner supervisor (2 restarts in 5 s) gives up:")
    for _ in range(3):
        indexer = (await inner.which_children())[1].ref
        assert indexer is not None
        await crash(indexer)
        try:
            await inner.count_children()
        except aiotp.AiotpError:
            break
    while inner.alive:
        await asyncio.sleep(0.001)
    await app.count_children()
    say(f"the inner supervisor gave up (exit reason {inner.exit_reason!r}); 'app' restarted it:")
    for line in await render(app):
        say("  " + line)
    new_inner = (await app.which_children())[1].ref
    assert new_inner is not None and new_inner is not inner and new_inner.alive
    await rt.stop(app)


if __name__ == "__main__":
    aiotp.run(main)
