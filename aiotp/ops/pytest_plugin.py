"""aiotp's pytest plugin (entry point ``pytest11``): fixtures for testing code built on aiotp.

Installed with aiotp and loaded by pytest automatically; it needs pytest-asyncio for its async
fixtures. Nothing here is autouse: a test gets these only by asking for them.

- ``aiotp_runtime``: a running `aiotp.Runtime` for the test, shut down at its end. The test then
  fails (an error at teardown, each problem listed) if it left actors alive (stop them, or start
  them with ``start_supervised``; a pool left running is named, with how to stop it), tasks it
  started still pending or child processes alive after the shutdown, or if anything logged at
  ERROR during it. Tasks that existed before the fixture (another fixture's server, a session
  fixture's consumer) are neither reported nor cancelled. A test that provokes errors on
  purpose says so with ``@pytest.mark.expect_errors("fragment", ...)``: records whose message
  or formatted exception holds a fragment are allowed (so ``"asked to crash"`` allows an actor
  crash with that reason); with no fragment, any. The runtime's own on-demand services (the
  plans supervisor) are not leaks.
- ``virtual_clock``: an `aiotp.VirtualClock`. A test that asks for both gets its runtime on it::

      async def test_session_expires(aiotp_runtime, virtual_clock):
          aiotp_runtime.sessions.create("s", ttl=3600)
          await virtual_clock.advance(3600)
          ...

- ``start_supervised``: ExUnit's. ``ref = await start_supervised(Counter, 5)`` (or a
  `ChildSpec`) starts a child under the test's own supervisor; when the test ends the children
  stop in reverse start order, before the runtime's checks run. A child that fails to start
  raises `StartChildError` (its reason in the message and ``.cause``), failing the test.
  ``await start_supervised.stop(id_or_ref)`` stops one earlier (``stop_supervised``).

Fixture names are prefixed or explicit so that they never shadow a project's own ``rt``. The
plugin is loaded through its entry point; with autoloading off, load it with ``-p aiotp``. Not
with ``pytest_plugins = ["aiotp.ops.pytest_plugin"]`` as well: pytest already has it under the
name ``aiotp`` and refuses to register it a second time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

__all__ = ["aiotp_runtime", "start_supervised", "virtual_clock"]

_pytest_asyncio: Any
try:
    import pytest_asyncio as _pytest_asyncio
except ImportError:  # the plugin is loaded wherever aiotp is installed, pytest-asyncio or not
    _pytest_asyncio = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "expect_errors(*fragments): the test provokes ERROR log records on purpose; only those "
        "holding one of the fragments are allowed (any record when none are given)",
    )


def _async_fixture(fn: Any) -> Any:
    if _pytest_asyncio is not None:
        return _pytest_asyncio.fixture(fn)

    @pytest.fixture(name=fn.__name__)
    def missing() -> None:
        raise pytest.UsageError(f"aiotp's {fn.__name__} fixture needs pytest-asyncio installed")

    return missing


@pytest.fixture
def virtual_clock() -> Any:
    """An `aiotp.VirtualClock` starting at 0; ``aiotp_runtime`` runs on it when both are used."""
    from aiotp.runtime.clock import VirtualClock

    return VirtualClock()


@_async_fixture
async def aiotp_runtime(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A runtime that fails the test on leftover actors, tasks, processes or ERROR logs."""
    import logging

    from aiotp.ops.testing import (
        ErrorRecords,
        descendants,
        leak_problems,
        leftover_problems,
        record_summary,
        task_snapshot,
    )
    from aiotp.runtime.runtime import Runtime

    clock = (
        request.getfixturevalue("virtual_clock")
        if "virtual_clock" in request.fixturenames
        else None
    )
    processes_before = set(descendants())
    tasks_before = task_snapshot()  # other fixtures' tasks: never reported, never cancelled
    errors = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(errors)
    problems: list[str] = []
    try:
        async with Runtime(shutdown_timeout=5.0, clock=clock) as rt:
            yield rt
            problems += leftover_problems(rt)
        problems += await leak_problems(processes_before, tasks_before=tasks_before)
    finally:
        root.removeHandler(errors)
    marker = request.node.get_closest_marker("expect_errors")
    unexpected = errors.unexpected(None if marker is None else tuple(marker.args))
    if unexpected:
        lines = "\n".join(f"  {r.name}: {record_summary(r)}" for r in unexpected[:10])
        problems.append(f"{len(unexpected)} ERROR log record(s):\n{lines}")
    if problems:
        pytest.fail("aiotp_runtime: " + "\n".join(problems), pytrace=False)


@_async_fixture
async def start_supervised(aiotp_runtime: Any) -> AsyncIterator[Any]:
    """``await start_supervised(ActorClass, *args, **kwargs)`` -> ref (see the module doc)."""
    from aiotp.ops.testing import Supervised

    supervised = Supervised(aiotp_runtime)
    yield supervised
    await supervised.stop_all()
    if supervised.gave_up:
        pytest.fail(
            "start_supervised: the test's supervisor exited before the end of the test (its "
            "children crashed more often than its restart intensity allows)",
            pytrace=False,
        )
