"""``python -m aiotp top`` in a real terminal (tmux), against a real application process.

What a user sees: the pool, its worker pids and the actors; a SIGKILLed worker shows as a
highlighted restart; the application going away shows "disconnected" and the view reconnects
when it is back; Ctrl-C ends the view with status 0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apps import ROOT, App, env, socket_dir, worker_pids

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")

SCREEN_DEADLINE = 30.0  # seconds for the screen to show something on a loaded machine
YELLOW = re.compile(r"\x1b\[(?:\d+;)*33(?:;\d+)*m")


class Tmux:
    """A tmux server of our own (``-L``), no user configuration, one 160x50 window."""

    def __init__(self) -> None:
        assert TMUX is not None
        self.tmux = TMUX
        self.name = f"aiotp-view-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.env = env()
        for var in ("NO_COLOR", "FORCE_COLOR", "TMUX"):
            self.env.pop(var, None)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tmux, "-L", self.name, "-f", os.devnull, *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=str(ROOT),
            timeout=30,
        )

    def start(self, command: str) -> None:
        done = self.run("new-session", "-d", "-x", "160", "-y", "50", command)
        assert done.returncode == 0, done.stderr

    def screen(self, escapes: bool = False) -> str:
        return self.run("capture-pane", "-p", *(["-e"] if escapes else [])).stdout

    def wait_for(self, what: str, seen: Callable[[str], bool], escapes: bool = False) -> str:
        deadline = time.monotonic() + SCREEN_DEADLINE
        while True:
            screen = self.screen(escapes)
            if seen(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {what}:\n{screen}")
            time.sleep(0.1)

    def kill(self) -> None:
        self.run("kill-server")
        # The server is gone (it also ends with its last session), its socket file may not be.
        tmpdir = os.environ.get("TMUX_TMPDIR") or "/tmp"
        Path(tmpdir, f"tmux-{os.getuid()}", self.name).unlink(missing_ok=True)


def pool_line(screen: str) -> str:
    return next((line for line in screen.splitlines() if "pool " in line and "ml" in line), "")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux()
    try:
        yield t
    finally:
        t.kill()


def test_top_shows_the_system_highlights_a_restart_survives_the_app_and_quits_on_ctrl_c(
    tmux: Tmux,
) -> None:
    with socket_dir() as d:
        sock, status = d / "app.sock", d / "top.status"
        app = App(sock, d / "app.log")
        try:
            app.wait_ready()
            pids = worker_pids(app.snapshot())
            top = f"{shlex.quote(sys.executable)} -m aiotp top --socket {sock} --interval 0.2"
            tmux.start(f"{top}; echo exit=$? > {status}")

            screen = tmux.wait_for(
                "the pool, its worker pids and the actors",
                lambda s: all(str(p) in s for p in pids) and "counter Counter" in s,
            )
            for shown in ("view-test-app", "pool ml (process, 2/2 live)", "app Supervisor"):
                assert shown in screen, screen
            assert "restarts 0" in pool_line(screen)
            plain = pool_line(tmux.screen(escapes=True))
            assert not YELLOW.search(plain[: plain.index("restarts 0")][-40:])

            os.kill(pids[0], signal.SIGKILL)
            screen = tmux.wait_for(
                "the restart counted",
                lambda s: "restarts 1" in pool_line(s) and str(pids[0]) not in s,
            )
            assert "('worker', 0) WorkerActor  RUNNING" in screen, screen
            coloured = pool_line(tmux.wait_for("it highlighted", lambda s: "restarts 1" in s, True))
            assert YELLOW.search(coloured[: coloured.index("restarts 1")][-40:]), repr(coloured)
            capture = Path(os.environ.get("AIOTP_VIEW_CAPTURE", os.devnull))
            capture.write_text(screen)  # the README's picture, when asked for

            assert app.stop() == 0
            tmux.wait_for("disconnected", lambda s: "disconnected:" in s)
            app = App(sock, d / "app2.log")  # the application comes back on the same path
            app.wait_ready()
            new_pid = str(app.proc.pid)
            tmux.wait_for(
                "the new application", lambda s: f"pid {new_pid}" in s and "disconnected" not in s
            )

            tmux.run("send-keys", "C-c")
            deadline = time.monotonic() + SCREEN_DEADLINE
            while not (status.exists() and status.read_text().endswith("\n")):
                assert time.monotonic() < deadline, f"top did not exit:\n{tmux.screen()}"
                time.sleep(0.05)
            assert status.read_text() == "exit=0\n"
        finally:
            app.stop()
