"""Shared test fixtures: a live Runtime per test, and the core suites on both loops."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest

import aiotp

ROOT = Path(__file__).resolve().parent.parent
# Child processes started by tests (workers, parent-death scripts) import test adapters from here.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p
    for p in (
        str(ROOT / "tests" / "workers"),
        str(ROOT / "tests"),
        str(ROOT),
        os.environ.get("PYTHONPATH", ""),
    )
    if p
)
for extra in (ROOT / "tests", ROOT / "tests" / "workers"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

_BOTH_LOOPS = ("tests/runtime", "tests/supervisors")


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
async def rt() -> AsyncIterator[aiotp.Runtime]:
    async with aiotp.Runtime(shutdown_timeout=2.0) as runtime:
        yield runtime
    # No task of the runtime may outlive it.
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leftovers, f"tasks left pending after shutdown: {leftovers}"
