"""``python -m aiotp tree`` against a real application process, and its mistakes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from apps import ROOT, App, env, socket_dir, worker_pids

CLI_DEADLINE = 60.0  # seconds for one command-line run on a loaded machine


def aiotp_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiotp", *args],
        capture_output=True,
        text=True,
        env=env(),
        cwd=str(ROOT),
        timeout=CLI_DEADLINE,
    )


@pytest.fixture
def app() -> Iterator[App]:
    with socket_dir() as d:
        application = App(d / "app.sock", d / "app.log")
        try:
            application.wait_ready()
            yield application
        finally:
            status = application.stop()
            log = application.log.read_text()
        assert status == 0, log
        assert "ERROR" not in log and "Traceback" not in log, log
        assert not application.sock.exists()  # the server removed its socket on the way out


def test_tree_json_is_the_raw_snapshot(app: App) -> None:
    done = aiotp_cli("tree", "--socket", str(app.sock), "--json")
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert (snap["name"], snap["state"]) == ("view-test-app", "RUNNING")
    (root,) = snap["tree"]
    assert root["name"] == "app"
    assert [c["child_id"] for c in root["children"]] == ["counter", "ml"]
    (pool,) = snap["pools"]
    assert (pool["name"], pool["size"], len(pool["workers"])) == ("ml", 2, 2)
    assert snap["sessions"]["by_state"]["pending"] == 1
    assert sorted(worker_pids(snap)) == sorted(worker_pids(app.snapshot()))


def test_tree_prints_the_picture_without_colour_to_a_pipe(app: App) -> None:
    done = aiotp_cli("tree", "--socket", str(app.sock))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out  # not a terminal: no escape codes
    for pid in worker_pids(app.snapshot()):
        assert str(pid) in out
    for shown in ("view-test-app", "pool ml", "counter Counter", "ml PoolSupervisor", "sessions 1"):
        assert shown in out, out


def test_a_missing_or_dead_socket_is_one_line_on_stderr_and_status_1() -> None:
    with socket_dir() as d:
        missing, stale = d / "nobody.sock", d / "stale.sock"
        for command in (["tree"], ["tree", "--json"], ["top"]):
            assert_one_line_failure(
                aiotp_cli(*command, "--socket", str(missing)), f"no control socket at {missing}"
            )
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(str(stale))
        dead.close()  # what a SIGKILLed application leaves behind
        assert_one_line_failure(
            aiotp_cli("tree", "--socket", str(stale)), f"nobody is listening on {stale}"
        )
        assert_one_line_failure(
            aiotp_cli("top", "--socket", str(stale), "--interval", "0"),
            "--interval must be a positive number",
        )


def assert_one_line_failure(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode == 1, done
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert says in done.stderr, done.stderr
