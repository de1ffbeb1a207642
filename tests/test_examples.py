"""The examples are documentation: they must run, and the demo must say that every part passed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import aiotp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=timeout
    )


def test_actors_tour_runs() -> None:
    out = _run("actors_tour.py")
    assert out.returncode == 0, out.stderr
    assert "Down  from 'victim': reason='killed'" in out.stdout


def test_supervision_tree_example_runs() -> None:
    out = _run("supervision_tree.py")
    assert out.returncode == 0, out.stderr
    assert "gave up (exit reason 'shutdown')" in out.stdout


def test_pool_examples_run() -> None:
    thread = _run("pool_thread.py")
    assert thread.returncode == 0, thread.stderr
    assert "session 'alice' sticks to worker" in thread.stdout
    process = _run("pool_process.py")
    assert process.returncode == 0, process.stderr
    assert "every call got a result or a typed error" in process.stdout


def test_planning_service_rebuilds_the_planners_of_a_killed_worker() -> None:
    started = time.monotonic()
    out = _run("planning_service.py", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.monotonic() - started < 30
    lines = out.stdout.splitlines()
    assert any(line.startswith("alice: ") and "planner reused" in line for line in lines)
    assert "dave : CallTimeout after" in out.stdout
    assert "gtpyhop gave up at timeout_ms=1000 (timeouts=1)" in out.stdout
    assert out.stdout.count("imported (running); plan of") == 3
    killed = out.stdout[out.stdout.index("killed planners-") :]
    assert "alice: SessionWorkerLost" in killed and "asked again: plan of" in killed
    assert "planner reused" in killed  # the users of the other workers kept their planners
    assert "3 of 3 workers live again" in killed


def test_guarantees_tour_shows_its_three_guarantees() -> None:
    out = _run("guarantees_tour.py")
    assert out.returncode == 0, out.stderr
    assert "queued call  (timeout=None): ActorExited, reason='killed'" in out.stdout
    assert "pool_stats().busy = 1" in out.stdout and "recycled=1" in out.stdout
    assert "the held request: WorkerCrashed" in out.stdout
    assert "the queued request: 42.0" in out.stdout


def test_plan_pipeline_runs_its_etl_plan_over_a_process_pool() -> None:
    started = time.monotonic()
    out = _run("plan_pipeline.py", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.monotonic() - started < 30
    assert "loaded 6 rows: {'ann': 12.0, 'bob': 24.0" in out.stdout
    assert "parsed in worker processes" in out.stdout
    for step in ("extract_north #1", "parse_west #1", "score_south #1", "merge #1", "load #1"):
        assert any(
            line.startswith(step) and line.endswith(" ok") for line in out.stdout.splitlines()
        )


@pytest.mark.slow
def test_demo_runs_every_part_and_exits_zero() -> None:
    started = time.monotonic()
    out = _run("demo.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all parts ok" in out.stdout
    assert "report: {'calls': 4000" in out.stdout
    assert "What the caller gets" in out.stdout
    assert "== Plans: an ETL plan" in out.stdout
    assert time.monotonic() - started < 30


def test_public_exports_are_pinned() -> None:
    missing = [name for name in aiotp.__all__ if not hasattr(aiotp, name)]
    assert not missing
    for name in ("Actor", "Runtime", "NOREPLY", "Down", "Exit", "NoProc", "CallTimeout"):
        assert name in aiotp.__all__


def test_readme_example_runs() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    start = readme.index("```python\nimport aiotp") + len("```python\n")
    code = readme[start : readme.index("```", start)]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
