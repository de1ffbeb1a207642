"""`python -m aiotp run module:app` as an operator uses it: real processes, real signals.

SIGTERM or SIGINT stop the application in reverse start order and exit 0; a second signal exits
at once; an application whose root supervisor gives up exits 1; a bad target exits 2 with one
line. Worker processes never outlive the runner."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

APP = '''
import asyncio, os, time
import aiotp

MARK = os.environ["AIOTP_TEST_MARK"]

def mark(line):
    with open(MARK, "a") as f:
        f.write(line + "\\n")

class Holder(aiotp.Actor):
    async def init(self, label):
        self.label = label
        mark(f"init {label}")
        await asyncio.sleep(float(os.environ.get(f"AIOTP_TEST_INIT_SLEEP_{label}", "0")))
        if label == "fragile":
            self.send_after(float(os.environ.get("AIOTP_TEST_CRASH_AFTER", "3600")), "boom")

    async def handle_info(self, msg):
        if msg == "boom":
            raise RuntimeError("fragile child gave up")

    async def terminate(self, reason):
        mark(f"stop {self.label} {reason}")
        await asyncio.sleep(float(os.environ.get("AIOTP_TEST_SLOW_STOP", "0")))
        time.sleep(float(os.environ.get("AIOTP_TEST_BLOCK_STOP", "0")))  # blocks the loop

class Echo(aiotp.Adapter):
    @aiotp.tool
    def echo(self, x):
        return x

async def load(rt):
    async def caller():
        while True:
            try:
                await rt.execute("echo", "echo", {"x": 1}, timeout=5.0)
            except aiotp.AiotpError:
                await asyncio.sleep(0.01)
    for _ in range(8):
        await rt.jobs.spawn(caller(), "load")

app = aiotp.Application(
    "svc",
    [
        aiotp.ChildSpec("first", Holder, args=("first",)),
        aiotp.pool_spec("echo", "svcapp:Echo", profile="process", size=2),
        aiotp.ChildSpec("fragile", Holder, args=("fragile",)),
        aiotp.ChildSpec("last", Holder, args=("last",)),
    ],
    max_restarts=2,
    max_seconds=60.0,
    shutdown_timeout=float(os.environ.get("AIOTP_TEST_SHUTDOWN", "10")),
    on_start=load if os.environ.get("AIOTP_TEST_LOAD") else None,
)
'''


class Runner:
    def __init__(self, tmp: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        (tmp / "svcapp.py").write_text(APP)
        self.mark = tmp / "terminated"
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiotp", "run", "svcapp:app", *extra],
            cwd=tmp,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "AIOTP_TEST_MARK": str(self.mark), **(env or {})},
        )
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, fragment: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if fragment in line:
                return line
        raise AssertionError(f"never saw {fragment!r}; stderr so far:\n{''.join(self.seen)}")

    def all_output(self) -> str:
        """Everything it wrote to stderr (call after it exited)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                self.seen.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                break
        return "".join(self.seen)

    def children(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]

    def marks(self) -> list[str]:
        return self.mark.read_text().splitlines() if self.mark.exists() else []

    def stops(self) -> list[str]:
        return [line[5:] for line in self.marks() if line.startswith("stop ")]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_in_reverse_order_and_exits_0(tmp_path: Path, signum: int) -> None:
    runner = Runner(tmp_path, env={"AIOTP_TEST_LOAD": "1"})
    runner.wait_for("application 'svc' running")
    workers = runner.children()
    assert len(workers) >= 2, workers  # the pool's worker processes
    time.sleep(0.2)  # let the load run
    sent = time.monotonic()
    runner.proc.send_signal(signum)
    assert runner.proc.wait(timeout=30) == 0, "".join(runner.seen)
    elapsed = time.monotonic() - sent
    assert elapsed < 10.0 + 5.0  # its shutdown_timeout, plus room for a loaded machine
    print(f"shutdown under load after {signal.Signals(signum).name}: {elapsed * 1000:.0f} ms")
    assert runner.stops() == ["last shutdown", "fragile shutdown", "first shutdown"]
    output = runner.all_output()
    assert " ERROR " not in output and "Traceback" not in output, output  # a clean stop
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(_gone(p) for p in workers), "a worker process outlived the runner"


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    runner = Runner(tmp_path, env={"AIOTP_TEST_SLOW_STOP": "60"})
    runner.wait_for("application 'svc' running")
    runner.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while not runner.stops() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.stops() == ["last shutdown"], "the graceful stop never started"
    runner.proc.send_signal(signal.SIGINT)  # the cleanup would take a minute: do not wait
    assert runner.proc.wait(timeout=20) == 128 + signal.SIGINT


def test_a_root_supervisor_that_gives_up_exits_1(tmp_path: Path) -> None:
    runner = Runner(tmp_path, env={"AIOTP_TEST_CRASH_AFTER": "0.05"})
    assert runner.proc.wait(timeout=60) == 1
    runner.wait_for("its root supervisor exited")
    assert "first shutdown" in runner.stops()


def test_bad_targets_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "notanapp.py").write_text(
        "import aiotp\n"
        "app = 42\n"
        "class NotApp:\n    pass\n"
        "def broken():\n    raise KeyError('settings')\n"
        "async def factory():\n    pass\n"
    )
    (tmp_path / "raising.py").write_text("raise RuntimeError('no config')\n")
    (tmp_path / "syntax.py").write_text("app = (\n")
    for target, fragment in (
        ("no_such_module:app", "cannot import 'no_such_module'"),
        ("notanapp:missing", "has no attribute 'missing'"),
        ("notanapp:app", "not an aiotp.Application"),
        ("notanapp", "expected module:attribute"),
        ("notanapp:NotApp", "the class NotApp"),
        ("notanapp:broken", "calling the factory 'notanapp:broken' failed: KeyError"),
        ("notanapp:factory", "async function"),
        ("notanapp:aiotp.Application", "the class Application"),
        ("raising:app", "importing 'raising' failed: RuntimeError: no config"),
        ("syntax:app", "importing 'syntax' failed: SyntaxError"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "aiotp", "run", target],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert fragment in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_json_log_lines(tmp_path: Path) -> None:
    runner = Runner(tmp_path, "--log-format", "json", "--log-level", "info")
    line = runner.wait_for("running")
    entry = json.loads(line)
    assert entry["logger"] == "aiotp.application"
    assert entry["level"] == "INFO"
    assert entry["pid"] == runner.proc.pid
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(timeout=30) == 0
    assert runner.lines.qsize() >= 0


def test_control_socket_and_metrics_live_as_long_as_the_app(tmp_path: Path) -> None:
    sock = tmp_path / "svc.sock"
    runner = Runner(tmp_path, "--control-socket", str(sock), "--metrics-port", "0")
    line = runner.wait_for("metrics: http://127.0.0.1:")
    url = line.split("metrics: ", 1)[1].strip()
    runner.wait_for("application 'svc' running")
    assert stat_mode(sock) == 0o600
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    assert 'aiotp_pool_workers{pool="echo",runtime="svc"}' in text.replace(", ", ","), text[:2000]
    tree = subprocess.run(
        [sys.executable, "-m", "aiotp", "tree", "--socket", str(sock), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tree.returncode == 0, tree.stderr
    snap = json.loads(tree.stdout)
    assert snap["name"] == "svc"
    assert [p["name"] for p in snap["pools"]] == ["echo"]
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(timeout=30) == 0
    assert not sock.exists()  # the control socket went with the application
    try:
        urllib.request.urlopen(url, timeout=2)
    except OSError:
        pass
    else:
        raise AssertionError("the metrics endpoint outlived the application")


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_signal_during_start_up_stops_what_started(tmp_path: Path) -> None:
    runner = Runner(tmp_path, env={"AIOTP_TEST_INIT_SLEEP_last": "600"})
    deadline = time.monotonic() + 30
    while "init last" not in runner.marks() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "init last" in runner.marks(), "never reached the slow child"
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(timeout=30) == 0, runner.all_output()
    # The children up before the slow one were stopped, in reverse order (gracefully: the
    # root supervisor, still starting, stops what it had started).
    assert runner.stops() == ["fragile shutdown", "first shutdown"], runner.marks()
    assert "running" not in runner.all_output()


def test_stop_is_bounded_when_children_hang_in_terminate(tmp_path: Path) -> None:
    runner = Runner(tmp_path, env={"AIOTP_TEST_SLOW_STOP": "600", "AIOTP_TEST_SHUTDOWN": "1"})
    runner.wait_for("application 'svc' running")
    sent = time.monotonic()
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(timeout=60) == 0, runner.all_output()
    # One shutdown_timeout for the graceful stop, one for the kills: not one per stuck child.
    assert time.monotonic() - sent < 30
    assert runner.stops() == ["last shutdown"]  # stuck there; the rest were killed
    assert "killing what is left" in runner.all_output()


def test_a_second_signal_exits_even_while_the_loop_is_blocked(tmp_path: Path) -> None:
    runner = Runner(tmp_path, env={"AIOTP_TEST_BLOCK_STOP": "600"})
    runner.wait_for("application 'svc' running")
    runner.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while not runner.stops() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.stops() == ["last shutdown"], "the graceful stop never started"
    time.sleep(0.1)  # it is now blocked in time.sleep inside terminate
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert "second SIGTERM during the stop" in runner.all_output()


def test_a_control_socket_it_cannot_bind_is_one_line_and_exit_2(tmp_path: Path) -> None:
    runner = Runner(tmp_path, "--control-socket", str(tmp_path / "no" / "such" / "dir.sock"))
    assert runner.proc.wait(timeout=60) == 2
    output = runner.all_output()
    assert "aiotp run:" in output and "Traceback" not in output, output
    assert runner.stops() == ["last shutdown", "fragile shutdown", "first shutdown"]
