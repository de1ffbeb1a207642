"""Point 5: a clean shutdown logs nothing at ERROR (the autouse `no_error_logs` fixture fails
any record) and leaves no task, thread pool or process behind (`no_leftover_processes`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aiotp

TOOLS = "guarantee_adapters:Tools"


class Service(aiotp.Actor):
    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        return msg


def _tree() -> list[aiotp.ChildSpec]:
    return [
        aiotp.ChildSpec("svc", Service, name="svc"),
        aiotp.pool_spec("threads", TOOLS, profile="thread", size=2, max_requests=3),
        aiotp.pool_spec("procs", TOOLS, profile="process", size=2, max_requests=3),
    ]


async def _load(rt: aiotp.Runtime, n: int) -> list[Any]:
    calls = [
        rt.execute(pool, "quick", {"value": i}, timeout=10)
        for i in range(n)
        for pool in ("threads", "procs")
    ]
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_runtime_exit_with_a_tree_of_pools_logs_no_error() -> None:
    async with aiotp.Runtime(shutdown_timeout=5.0) as rt:
        await rt.spawn(aiotp.Supervisor, _tree(), name="app")
        results = await _load(rt, 10)
        assert all(not isinstance(r, BaseException) for r in results), results
        assert await rt.call("svc", "hi") == "hi"


async def test_shutdown_in_the_middle_of_recycling_and_requests_logs_no_error() -> None:
    async with aiotp.Runtime(shutdown_timeout=5.0) as rt:
        await rt.spawn(aiotp.Supervisor, _tree(), name="app")
        # Every worker recycles after 3 requests: replacements are starting as we leave.
        load = asyncio.ensure_future(_load(rt, 20))
        await asyncio.sleep(0.05)
    results = await load
    for result in results:
        # Requests cut by the shutdown end with a typed error, never silence.
        assert not isinstance(result, BaseException) or isinstance(result, aiotp.AiotpError), (
            repr(result)
        )


async def test_shutdown_with_tools_still_running_logs_no_error() -> None:
    async with aiotp.Runtime(shutdown_timeout=3.0) as rt:
        for profile in ("thread", "process"):
            await rt.start_pool(profile, TOOLS, profile=profile, size=1, shutdown=0.3)
        slow = [
            asyncio.ensure_future(rt.execute(p, "block", {"seconds": 30}, timeout=60))
            for p in ("thread", "process")
        ]
        await asyncio.sleep(0.2)
    for call in slow:
        with pytest.raises(aiotp.AiotpError):
            await call


async def test_stop_pool_then_runtime_exit_logs_no_error() -> None:
    async with aiotp.Runtime() as rt:
        await rt.start_pool("p", TOOLS, profile="process", size=2, ttl=0.2)
        await asyncio.sleep(0.5)  # ttl recycling in progress
        assert await rt.execute("p", "quick", {"value": 1}) == 1
        await rt.stop_pool("p")
