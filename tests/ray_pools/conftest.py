"""Fixtures of the Ray pool tests: one real local Ray per module, never a mock.

Ray's processes (GCS, raylet, its idle worker processes) belong to the module, not to a test:
the Ray fixtures are module-scoped, so they start before the per-test process snapshot, and at
module end `ray.shutdown()` must really end every one of them (checked there). Per test, the
process check below is the suite's own with one allowance: idle Ray worker processes
("ray::IDLE"), which Ray's raylet starts and keeps by itself to host future tasks. Every
process that hosted one of our actors ("ray::RayHost") must be gone after each test.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import descendants

HERE = Path(__file__).resolve().parent
# Ray's worker processes inherit this environment when the fixtures start Ray: they import the
# test adapters ("ray_adapters:RayEcho") from here.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
# Loopback only: Ray reads this when it is imported (without it, a Cluster's nodes bind the
# machine's outside address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
try:
    import ray  # noqa: F401
except ImportError:  # Ray has no wheel here, or `make` could not install it
    # Collect nothing but test_ray_missing.py, which skips with one line saying so.
    # (pytest.importorskip in a conftest aborts the whole run instead of skipping.)
    collect_ignore = [p.name for p in HERE.glob("test_*.py") if p.name != "test_ray_missing.py"]
    RAY_EXIT_DEADLINE = 0.0

    def ray_idle(_pid: int) -> bool:
        return False

    def cmdline(pid: int) -> str:
        return str(pid)
else:
    from ray_helpers import RAY_EXIT_DEADLINE, cmdline, ray_idle, wait_processes_gone


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """The suite's leftover-process check, allowing Ray's idle worker processes (see above)."""
    before = set(descendants())
    yield
    deadline = time.monotonic() + 10.0
    left = [p for p in set(descendants()) - before if not ray_idle(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in set(descendants()) - before if not ray_idle(p)]
    assert not left, f"processes left alive after the test: {[(p, cmdline(p)) for p in left]}"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_ray_errors() -> Iterator[None]:
    """Fail a test on ERROR records of Ray's own logger (it does not propagate to the root,
    where the suite's check listens): e.g. "Unhandled error" for a call whose failure nobody
    read, which the Ray handle must never leave behind."""
    handler = _Records()
    ray_logger = logging.getLogger("ray")
    ray_logger.addHandler(handler)
    try:
        yield
    finally:
        ray_logger.removeHandler(handler)
    lines = [f"{r.name}: {r.getMessage()[:300]}" for r in handler.records]
    assert not lines, "Ray logged errors:\n" + "\n".join(lines)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray for the module (2 CPUs, 127.0.0.1, no dashboard), shut down at its end."""
    import ray

    before = set(descendants())
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        namespace="aiotp-tests",
    )
    try:
        yield
    finally:
        ray.shutdown()
        left = wait_processes_gone(before, time.monotonic() + RAY_EXIT_DEADLINE)
        assert not left, f"Ray left processes: {[(p, cmdline(p)) for p in left]}"
