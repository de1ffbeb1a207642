"""Helpers of the view tests: a short socket directory, and the test application's process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from aiotp.ops.control_client import ControlClient
from aiotp.ops.control_protocol import ControlError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
START_DEADLINE = 60.0  # seconds; a loaded 2-core machine starts a process pool slowly


def env() -> dict[str, str]:
    """The environment of the app and of the command line: both import from this directory."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), e.get("PYTHONPATH", "")])
    e.pop("COLUMNS", None)
    return e


@contextlib.contextmanager
def socket_dir() -> Iterator[Path]:
    """A short private directory (unix socket paths must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="aiotp-view-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class App:
    """The test application (view_app.py) in a child process, serving `sock`."""

    def __init__(self, sock: Path, log: Path) -> None:
        self.sock = sock
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "view_app.py"), str(sock)],
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
            env=env(),
            cwd=str(ROOT),
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            assert self.proc.poll() is None, f"the app exited: {self.log.read_text()}"
            try:
                with ControlClient(self.sock, timeout=5.0) as client:
                    client.ping()
                    return
            except ControlError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def snapshot(self) -> dict[str, object]:
        with ControlClient(self.sock, timeout=10.0) as client:
            return dict(client.snapshot())

    def stop(self) -> int:
        """SIGTERM (a graceful stop), SIGKILL if it hangs; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


def worker_pids(snap: dict[str, object]) -> list[int]:
    pools = snap["pools"]
    assert isinstance(pools, list)
    return [w["pid"] for p in pools for w in p["workers"] if w["pid"] is not None]
