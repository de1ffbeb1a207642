"""Point 12: the runtime's background work runs on one aiojobs scheduler the runtime owns."""

from __future__ import annotations

import asyncio
import logging

import pytest
from helpers import wait_until

import aiotp

TOOLS = "guarantee_adapters:Tools"


@pytest.mark.expect_errors("background job 'doomed' failed")
async def test_a_failing_job_is_reported_with_its_name(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    async def doomed() -> None:
        raise ValueError("lost in the background")

    await rt.jobs.spawn(doomed(), name="doomed")
    await wait_until(lambda: rt.jobs.active == 0, 5.0)
    await asyncio.sleep(0)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "doomed" in record.getMessage()
    assert record.exc_info is not None and "lost in the background" in str(record.exc_info[1])


async def test_shutdown_closes_every_job_and_refuses_new_ones() -> None:
    ended = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    async with aiotp.Runtime(shutdown_timeout=1.0) as rt:
        await rt.jobs.spawn(forever(), name="forever")
        assert rt.jobs.active == 1
    assert ended.is_set() and rt.jobs.active == 0
    with pytest.raises(aiotp.RuntimeClosed):
        await rt.jobs.spawn(forever(), name="too late")


async def test_heartbeats_and_the_session_sweeper_run_as_runtime_jobs() -> None:
    store = aiotp.SessionStore(sweep_interval=0.05)
    async with aiotp.Runtime(sessions=store) as rt:
        assert rt.jobs.active == 1  # the sweeper
        store.create("s", ttl=0.01)
        await wait_until(lambda: "s" not in store, 5.0)  # swept by the job
        await rt.start_pool(
            "p", TOOLS, profile="thread", size=2, heartbeat=aiotp.Heartbeat(0.02, 1.0, 3)
        )
        names: set[str] = set()

        def seen() -> bool:
            names.update(job.get_name() or "" for job in rt.jobs._scheduler)
            return any(n.startswith("heartbeat of") for n in names)

        await wait_until(seen, 5.0)
    assert rt.jobs.active == 0
