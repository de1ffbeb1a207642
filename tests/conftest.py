"""Shared test fixtures: a live Runtime per test, and the core suites on both loops."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest
from procs import descendants

import aiotp
from aiotp.ops.testing import record_summary, record_text

ROOT = Path(__file__).resolve().parent.parent
# Child processes started by tests (workers, parent-death scripts) import test adapters from here.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p
    for p in (
        str(ROOT / "tests" / "workers"),
        str(ROOT / "tests" / "guarantees"),
        str(ROOT / "tests"),
        str(ROOT),
        os.environ.get("PYTHONPATH", ""),
    )
    if p
)
for extra in (ROOT / "tests", ROOT / "tests" / "workers", ROOT / "tests" / "guarantees"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

_BOTH_LOOPS = ("tests/runtime", "tests/supervisors", "tests/guarantees")


def _loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # uvloop is optional at run time; the suite still runs on asyncio
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]] | None:
    """The core suites (runtime, supervisors) run on both the default loop and uvloop."""
    path = Path(str(item.path))
    relative = str(path.relative_to(ROOT)) if ROOT in path.parents else ""
    if relative.startswith(_BOTH_LOOPS):
        return _loop_factories()
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
async def rt(request: pytest.FixtureRequest) -> AsyncIterator[aiotp.Runtime]:
    # A test that also asks for `virtual_clock` (aiotp's pytest plugin) runs on simulated time.
    clock = (
        request.getfixturevalue("virtual_clock")
        if "virtual_clock" in request.fixturenames
        else None
    )
    async with aiotp.Runtime(shutdown_timeout=2.0, clock=clock) as runtime:
        yield runtime
    # No task of the runtime may outlive it.
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leftovers, f"tasks left pending after shutdown: {leftovers}"


class _ErrorRecords(logging.Handler):
    """Collects every record at ERROR or above, from any thread, while a test runs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "expect_errors(*fragments): the test provokes ERROR log records on purpose (a crash it "
        "checks); only records whose message or formatted exception holds one of the fragments are "
        "allowed (any record when none are given)",
    )


@pytest.fixture(autouse=True)
def no_error_logs(request: pytest.FixtureRequest) -> Iterator[_ErrorRecords]:
    """Fail any test that logs at ERROR unless it is marked `expect_errors`.

    A clean run, a clean shutdown included, logs nothing at ERROR: an ERROR record is either a
    bug or a crash the test provokes on purpose and says so. Autouse fixtures are set up first,
    so this check runs after every other fixture's teardown (the runtime's shutdown included).
    """
    handler = _ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
    marker = request.node.get_closest_marker("expect_errors")
    expected: tuple[str, ...] = marker.args if marker is not None else ()
    unexpected = [
        r
        for r in handler.records
        if marker is None or (expected and not any(e in record_text(r) for e in expected))
    ]
    if unexpected:
        lines = "\n".join(f"  {r.name}: {record_summary(r)}" for r in unexpected[:10])
        pytest.fail(f"unexpected ERROR log records ({len(unexpected)}):\n{lines}")


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail any test that leaves a child process (worker, template, a tool's child) alive."""
    before = set(descendants())
    yield
    deadline = time.monotonic() + 5.0
    left = set(descendants()) - before
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = set(descendants()) - before
    assert not left, f"processes left alive after the test: {sorted(left)}"
