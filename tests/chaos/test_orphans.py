"""No orphans: a runtime's worker processes die with it, even when it is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.slow

PARENT = textwrap.dedent(
    """
    import asyncio, json, sys
    import aiotp

    async def main(rt):
        await rt.start_pool("a", "pool_adapters:Echo", profile="process", size=3)
        await rt.start_pool("b", "pool_adapters:Echo", profile="process", size=2,
                            threads_per_worker=2)
        # Busy workers too: a request in flight must not keep a worker alive.
        busy = asyncio.ensure_future(rt.execute("a", "sleep", {"seconds": 60}, timeout=120))
        await asyncio.sleep(0.05)
        pids = [w.pid for name in ("a", "b") for w in rt.pool_stats(name).workers]
        print(json.dumps(pids), flush=True)
        await asyncio.sleep(3600)

    aiotp.run(main)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_sigkilled_parent_leaves_no_worker_behind() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, parent.stderr.read() if parent.stderr else "no output"
        pids = json.loads(line)
        assert len(pids) == 5 and all(_alive(p) for p in pids)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.02)
    survivors = [p for p in pids if _alive(p)]
    for p in survivors:  # do not leak them into the rest of the test run
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"workers outlived their SIGKILLed parent: {survivors}"
