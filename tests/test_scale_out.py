"""examples/scale_out.py for real: a redis-server, a Ray head, two app instances in two
processes. A session started on one instance is served by the same Ray worker (its state kept)
when the other instance handles its next request."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scale_out.py"


def test_two_instances_share_sessions_and_workers() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("AIOTP_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required here (AIOTP_REQUIRE_REDIS=1)")
        pytest.skip("redis-server not installed: apt-get install redis-server")
    pytest.importorskip("ray")
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=EXAMPLE.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("user-")]
    assert len(rows) == 10, done.stdout
    for session in ("user-1", "user-2"):
        mine = [r for r in rows if r[0] == session]
        assert [int(r[2]) for r in mine] == [1, 2, 3, 4, 5]  # the state followed the session
        assert {r[1] for r in mine} == {"A", "B"}  # both instances served it
        assert len({r[3] for r in mine}) == 1  # always the same worker process
    assert "whichever instance asked: yes" in done.stdout
