"""Per-sender order holds whatever the interleaving of senders (hypothesis)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiotp


class Log(aiotp.Actor):
    async def init(self) -> None:
        self.got: list[tuple[int, int]] = []

    async def handle_cast(self, msg: tuple[int, int]) -> None:
        self.got.append(msg)
        if msg[1] % 3 == 0:
            await asyncio.sleep(0)  # handlers that suspend must not reorder anything

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        return list(self.got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=80))
def test_per_sender_order_holds_under_random_interleavings(plan: list[tuple[int, int]]) -> None:
    async def scenario(rt: aiotp.Runtime) -> None:
        log = await rt.spawn(Log)
        counters = [0] * 5
        scripts: list[list[tuple[int, int]]] = [[] for _ in range(5)]
        for sender, pauses in plan:
            scripts[sender].append((counters[sender], pauses))
            counters[sender] += 1

        async def sender_task(sender: int) -> None:
            for seq, pauses in scripts[sender]:
                for _ in range(pauses):
                    await asyncio.sleep(0)
                if seq % 2:
                    await log.cast((sender, seq))
                else:
                    log.cast_nowait((sender, seq))

        await asyncio.gather(*(sender_task(s) for s in range(5)))
        got = await log.call("all")
        assert len(got) == len(plan)
        for s in range(5):
            assert [seq for snd, seq in got if snd == s] == list(range(counters[s]))

    aiotp.run(scenario)
