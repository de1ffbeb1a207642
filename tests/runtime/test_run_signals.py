"""`aiotp.run` under SIGTERM, as `docker stop` sends it: a graceful shutdown, exit status 0; a
second SIGTERM during that shutdown exits at once. Real subprocesses, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

APP = """
import asyncio, sys
import aiotp

class Holder(aiotp.Actor):
    async def init(self) -> None:
        print("ready", flush=True)

    async def terminate(self, reason) -> None:
        with open(sys.argv[1], "w") as f:
            f.write(str(reason))
        await asyncio.sleep(float(sys.argv[2]))  # a slow cleanup, when asked for

async def main(rt: aiotp.Runtime) -> None:
    await rt.spawn(Holder, name="holder")
    await asyncio.Event().wait()

aiotp.run(main, shutdown_timeout=60.0)
"""


def _start(tmp_path: Path, cleanup_seconds: float) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    marker = tmp_path / "terminated"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marker), str(cleanup_seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc, marker


def test_sigterm_shuts_down_gracefully_and_exits_0(tmp_path: Path) -> None:
    proc, marker = _start(tmp_path, 0.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert marker.read_text() == "shutdown"  # the actor's terminate ran


def test_a_second_sigterm_exits_at_once(tmp_path: Path) -> None:
    proc, marker = _start(tmp_path, 60.0)
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), "the graceful shutdown never started"
    proc.send_signal(signal.SIGTERM)  # its cleanup would take a minute: do not wait
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
