"""aiotp's pytest plugin, run by pytest itself (``pytester``): each test writes a small test
module, runs it in an inner pytest session, and checks what that session reported."""

from __future__ import annotations

from collections.abc import Callable

import pytest

# The inner sessions run in this process, and pytester drops the modules they imported when they
# end: aiotp is imported here, once, so that every inner session sees the same classes.
import aiotp
import aiotp.ops.testing
import aiotp.runtime.clock

pytest_plugins = ["pytester"]
assert aiotp.Actor is aiotp.ops.testing.Supervisor.__mro__[-2]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
timeout = 0
"""

ACTORS = """
import asyncio
from typing import Any

import pytest

import aiotp


class Counter(aiotp.Actor):
    async def init(self, start: int = 0, log: list | None = None) -> None:
        self.n = start
        self.log = log if log is not None else []

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        if msg == "crash":
            raise ValueError("asked to crash")
        return self.n

    async def terminate(self, reason: Any) -> None:
        self.log.append(("terminate", self.n, reason))


class FailsToStart(aiotp.Actor):
    async def init(self) -> None:
        raise ConnectionRefusedError("database at db:5432 refused the connection")
"""


Inner = Callable[..., pytest.RunResult]


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Inner:
    """``inner(body, *args, autoload=False, subprocess=False)`` runs `body` (after ACTORS) in
    an inner session.

    Scanning every installed package for entry points costs about a second per session, so only
    the test of the entry point itself loads plugins that way; the others name the two they use.
    A session that imports more of aiotp than this module did (pools) runs in a subprocess:
    pytester drops what an in-process session imported, and the tests after it would then see
    second copies of aiotp's classes.
    """

    def run(
        body: str, *args: str, autoload: bool = False, subprocess: bool = False
    ) -> pytest.RunResult:
        pytester.makeini(INI)
        pytester.makepyfile(test_inner=ACTORS + body)
        runner = pytester.runpytest_subprocess if subprocess else pytester.runpytest
        if autoload:
            monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
            return runner("-p", "no:cacheprovider", *args)
        monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        plugins = ("-p", "asyncio", "-p", "aiotp.ops.pytest_plugin", "-p", "no:cacheprovider")
        return runner(*plugins, *args)

    return run


def test_the_plugin_is_found_through_its_entry_point_and_a_clean_test_passes(
    inner: Inner,
) -> None:
    result = inner(
        """
async def test_clean(aiotp_runtime):
    ref = await aiotp_runtime.spawn(Counter, 5)
    assert await ref.call("get") == 5
    await aiotp_runtime.stop(ref)
""",
        autoload=True,
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins:*aiotp-*"])


def test_a_test_that_leaves_an_actor_alive_is_reported(inner: Inner) -> None:
    result = inner(
        """
async def test_leaks(aiotp_runtime):
    await aiotp_runtime.spawn(Counter, 5, name="leaky")
""",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*1 actor(s) left alive*Counter 'leaky'*"])


def test_a_test_that_leaves_a_task_pending_is_reported(inner: Inner) -> None:
    result = inner(
        """
async def test_leaks_a_task(aiotp_runtime):
    asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="forgotten")
""",
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*1 task(s) left pending*forgotten*"])


@pytest.mark.expect_errors("something went wrong")
def test_an_error_log_fails_the_test_unless_it_is_expected(inner: Inner) -> None:
    result = inner(
        """
import logging

async def test_logs_an_error(aiotp_runtime):
    logging.getLogger("app").error("something went wrong")

@pytest.mark.expect_errors("went wrong")
async def test_expects_it(aiotp_runtime):
    logging.getLogger("app").error("something went wrong")

@pytest.mark.expect_errors("another thing")
async def test_expects_another(aiotp_runtime):
    logging.getLogger("app").error("something went wrong")
""",
        "-rE",
    )
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(["*ERROR log record(s)*", "*app: something went wrong*"])
    result.stdout.fnmatch_lines(["ERROR test_inner.py::test_logs_an_error*"])
    result.stdout.fnmatch_lines(["ERROR test_inner.py::test_expects_another*"])


def test_start_supervised_stops_children_in_reverse_start_order_before_the_checks(
    inner: Inner,
) -> None:
    result = inner(
        """
LOG = []

async def test_starts_three(start_supervised, aiotp_runtime):
    refs = [await start_supervised(Counter, n, log=LOG) for n in (1, 2, 3)]
    assert [await r.call("get") for r in refs] == [1, 2, 3]
    assert len(aiotp_runtime.actors()) == 4  # the test's supervisor and its three children

def test_they_stopped_in_reverse_order():
    assert LOG == [("terminate", 3, "shutdown"), ("terminate", 2, "shutdown"),
                   ("terminate", 1, "shutdown")]
""",
    )
    result.assert_outcomes(passed=2)


def test_a_child_that_fails_to_start_fails_the_test_with_its_reason(
    inner: Inner,
) -> None:
    result = inner(
        """
async def test_cannot_start(start_supervised):
    await start_supervised(FailsToStart)
""",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*StartChildError*'FailsToStart' failed to start*database at db:5432 refused*"]
    )


@pytest.mark.expect_errors("crashed")
def test_a_child_crashing_during_the_test_is_restarted_and_reported(
    inner: Inner,
) -> None:
    result = inner(
        """
async def test_child_crashes(start_supervised, aiotp_runtime):
    ref = await start_supervised(Counter, 7, name="c")
    with pytest.raises(ValueError):
        await ref.call("crash")
    for _ in range(1000):  # the supervisor restarts it under its name
        new = aiotp_runtime.whereis("c")
        if new is not None and new is not ref:
            break
        await asyncio.sleep(0.005)
    assert await aiotp_runtime.call("c", "get") == 7

@pytest.mark.expect_errors("crashed")
async def test_child_crash_expected(start_supervised):
    ref = await start_supervised(Counter, 7)
    with pytest.raises(ValueError):
        await ref.call("crash")
""",
        "-rE",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["ERROR test_inner.py::test_child_crashes*"])
    result.stdout.fnmatch_lines(
        ["*1 ERROR log record(s):*", "*aiotp.actor: <ActorRef Counter 'c'*crashed*"]
    )


def test_start_supervised_takes_child_specs_and_stops_one_child_early(
    inner: Inner,
) -> None:
    result = inner(
        """
LOG = []

async def test_specs(start_supervised, aiotp_runtime):
    a = await start_supervised(aiotp.ChildSpec("a", Counter, args=(1, LOG)))
    b = await start_supervised(Counter, 2, log=LOG)
    c = await start_supervised(Counter, 3, log=LOG)
    await start_supervised.stop(b)
    assert not b.alive and a.alive and c.alive
    with pytest.raises(aiotp.DuplicateChild):
        await start_supervised(aiotp.ChildSpec("a", Counter))
    await start_supervised.stop("a")
    assert LOG == [("terminate", 2, "shutdown"), ("terminate", 1, "shutdown")]
""",
    )
    result.assert_outcomes(passed=1)


def test_a_virtual_clock_test_runs_its_runtime_on_that_clock(inner: Inner) -> None:
    result = inner(
        """
class Reminder(aiotp.Actor):
    async def init(self) -> None:
        self.fired = []
    async def handle_cast(self, seconds) -> None:
        self.send_after(seconds, "remind")
    async def handle_info(self, msg) -> None:
        self.fired.append(self.runtime.clock.now())
    async def handle_call(self, msg, caller):
        return self.fired

async def test_an_hour_in_no_time(start_supervised, aiotp_runtime, virtual_clock):
    assert aiotp_runtime.clock is virtual_clock
    ref = await start_supervised(Reminder)
    await ref.cast(3600)
    await virtual_clock.advance(3599)
    assert await ref.call("fired") == []
    await virtual_clock.advance(1)
    assert await ref.call("fired") == [3600.0]

async def test_without_it_the_clock_is_real(aiotp_runtime):
    with pytest.raises(aiotp.AiotpError):
        await aiotp_runtime.clock.advance(1)
""",
        "--durations=0",
    )
    result.assert_outcomes(passed=2)


def test_tasks_of_other_fixtures_are_neither_reported_nor_cancelled(inner: Inner) -> None:
    result = inner(
        """
import contextlib
import pytest_asyncio

@pytest_asyncio.fixture
async def server():
    # A fixture with a background task (a test server), set up before the runtime.
    task = asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="server")
    yield task
    assert not task.done(), "aiotp_runtime cancelled another fixture's task"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

async def test_server_then_runtime(server, aiotp_runtime):
    asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="the-tests-own")
""",
        "-rE",
    )
    # The test's own forgotten task is still reported; the server's is not.
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*1 task(s) left pending*the-tests-own*"])
    result.stdout.no_fnmatch_line("*cancelled another fixture's task*")


def test_a_session_fixtures_task_survives_a_runtime_test(inner: Inner) -> None:
    result = inner(
        """
import pytest_asyncio

@pytest_asyncio.fixture(scope="session")
async def consumer():
    task = asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="consumer")
    yield task
    task.cancel()

async def test_one(consumer, aiotp_runtime):
    assert not consumer.done()

async def test_two(consumer):
    assert not consumer.cancelled(), "cancelled by aiotp_runtime in test_one"
""",
        "-o",
        "asyncio_default_fixture_loop_scope=session",
        "-o",
        "asyncio_default_test_loop_scope=session",
    )
    result.assert_outcomes(passed=2)


@pytest.mark.expect_errors("crashed")
def test_expect_errors_matches_a_crash_by_its_reason(inner: Inner) -> None:
    result = inner(
        """
@pytest.mark.expect_errors("asked to crash")
async def test_by_reason(start_supervised):
    ref = await start_supervised(Counter, 1)
    with pytest.raises(ValueError):
        await ref.call("crash")

@pytest.mark.expect_errors("another reason")
async def test_other_reason(start_supervised):
    ref = await start_supervised(Counter, 1)
    with pytest.raises(ValueError):
        await ref.call("crash")
""",
        "-rE",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["ERROR test_inner.py::test_other_reason*"])
    # The report shows the reason too, not only "<ref> crashed".
    result.stdout.fnmatch_lines(
        ["*aiotp.actor: <ActorRef Counter*crashed (ValueError: asked to crash)"]
    )


def test_a_pool_left_running_is_named_with_how_to_stop_it(inner: Inner) -> None:
    result = inner(
        """
async def test_forgets_its_pool(aiotp_runtime):
    await aiotp_runtime.start_pool("p", "pool_adapters:Echo", profile="thread", size=1)
    assert await aiotp_runtime.execute("p", "echo", {"value": 1}) == 1

async def test_stops_its_pool(aiotp_runtime):
    await aiotp_runtime.start_pool("p", "pool_adapters:Echo", profile="thread", size=1)
    await aiotp_runtime.stop_pool("p")

async def test_pool_and_an_actor(aiotp_runtime):
    await aiotp_runtime.start_pool("q", "pool_adapters:Echo", profile="thread", size=1)
    await aiotp_runtime.spawn(Counter, name="leaky")
""",
        "-rE",
        subprocess=True,
    )
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*pool 'p' still running (5 actor(s)): stop it with rt.stop_pool('p'), or start it "
            "with start_supervised(aiotp.pool_spec('p', ...))*"
        ]
    )
    result.stdout.fnmatch_lines(["*pool 'q' still running*", "*1 actor(s) left alive*'leaky'*"])
    result.stdout.no_fnmatch_line("*HeartbeatMonitor*")


class _Crasher(aiotp.Actor):
    async def handle_call(self, msg: object, caller: aiotp.Caller) -> object:
        raise ValueError("a reason found only in the exception")


@pytest.mark.expect_errors("a reason found only in the exception")
async def test_the_suites_own_error_check_matches_the_exception_too(rt: aiotp.Runtime) -> None:
    # tests/conftest.py's no_error_logs: the crash is logged as "<ref> crashed", its reason is
    # only in the record's exception.
    ref = await rt.spawn(_Crasher)
    with pytest.raises(ValueError):
        await ref.call("x")
