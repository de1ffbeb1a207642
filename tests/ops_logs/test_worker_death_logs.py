"""What each kind of worker death and user-code crash logs: record counts, levels, loggers.

An expected death (SIGKILL, an exit, a heartbeat kill, a protocol break) is ONE WARNING line on
``aiotp.pool.<name>`` and no ERROR record; a crash of user code is ONE ERROR record with its
traceback, not one per worker or per restart attempt.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import pytest
from helpers import wait_until

import aiotp
from aiotp.workers.api import registry

ECHO = "pool_adapters:Echo"


def records(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("aiotp") and (level is None or r.levelno == level)
    ]


def with_traceback(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in records(caplog) if r.exc_info and r.levelno >= logging.INFO]


def workers(rt: aiotp.Runtime, pool: str) -> dict[int, Any]:
    slots = registry(rt).pools[pool].dispatcher.slots
    return {s.index: s.handle for s in slots if not s.handle.closed.done()}


async def replaced(rt: aiotp.Runtime, pool: str, index: int, old: Any) -> None:
    await wait_until(lambda: workers(rt, pool).get(index) not in (None, old), 10)


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="aiotp")
    return caplog


async def test_sigkill_is_one_warning_naming_pool_worker_pid_and_signal(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    # Worker 0 starts afresh (its exit code comes from Popen), worker 1 is forked from the
    # template (its exit code comes from the template's report): both name the signal.
    await rt.start_pool("ml", ECHO, profile="process", size=2, heartbeat=None)
    caplog.clear()
    for index in (0, 1):
        old = workers(rt, "ml")[index]
        os.kill(old.pid, signal.SIGKILL)
        await replaced(rt, "ml", index, old)
        lines = [r for r in records(caplog, logging.WARNING)]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        (line,) = lines
        assert line.name == "aiotp.pool.ml"
        assert line.getMessage() == (
            f"pool 'ml': worker {index} ({old.worker_id}, pid {old.pid}) was killed by "
            "SIGKILL; replacing it"
        )
        assert not with_traceback(caplog) and not records(caplog, logging.ERROR)
        caplog.clear()


async def test_exit_code_is_one_warning_and_the_caller_gets_worker_crashed(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    await rt.start_pool("ml", ECHO, profile="process", size=1, heartbeat=None)
    old = workers(rt, "ml")[0]
    caplog.clear()
    with pytest.raises(aiotp.WorkerCrashed):
        await rt.execute("ml", "die")  # os._exit(3)
    await replaced(rt, "ml", 0, old)
    await wait_until(lambda: records(caplog, logging.WARNING), 5)
    (line,) = records(caplog, logging.WARNING)
    assert line.name == "aiotp.pool.ml"
    assert f"worker 0 ({old.worker_id}, pid {old.pid}) exited with code 3" in line.getMessage()
    assert not with_traceback(caplog) and not records(caplog, logging.ERROR)


async def test_heartbeat_kill_is_one_warning(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    beat = aiotp.Heartbeat(interval=0.1, timeout=0.2, max_missed=2)
    await rt.start_pool("hb", ECHO, profile="process", size=1, heartbeat=beat)
    old = workers(rt, "hb")[0]
    caplog.clear()
    with pytest.raises(aiotp.WorkerCrashed):
        await rt.execute("hb", "hang", timeout=60.0)  # the heartbeat ends it, not the timeout
    await replaced(rt, "hb", 0, old)
    lines = records(caplog, logging.WARNING)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].name == "aiotp.pool.hb"
    assert f"worker {old.worker_id} (pid {old.pid}) missed 2 heartbeats" in lines[0].getMessage()
    assert not with_traceback(caplog) and not records(caplog, logging.ERROR)


async def test_protocol_break_is_one_warning_saying_so(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    await rt.start_pool("ml", ECHO, profile="process", size=1, heartbeat=None)
    old = workers(rt, "ml")[0]
    caplog.clear()
    with pytest.raises(aiotp.WorkerCrashed):
        await rt.execute("ml", "garbage")
    await replaced(rt, "ml", 0, old)
    await wait_until(lambda: records(caplog, logging.WARNING), 5)
    (line,) = records(caplog, logging.WARNING)
    assert "broke the wire protocol" in line.getMessage() and str(old.pid) in line.getMessage()
    assert not with_traceback(caplog) and not records(caplog, logging.ERROR)


@pytest.mark.expect_errors("failed to start")
@pytest.mark.parametrize("profile", ["process", "thread"])
async def test_setup_raising_in_every_worker_is_one_error_with_its_traceback(
    rt: aiotp.Runtime,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    profile: str,
) -> None:
    with pytest.raises(aiotp.WorkerStartError, match="model file missing"):
        await rt.start_pool("bad", "pool_adapters:BadSetup", profile=profile, size=4)
    errors = records(caplog, logging.ERROR)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    (error,) = errors
    assert error.name == "aiotp.pool.bad" and "failed to start" in error.getMessage()
    assert with_traceback(caplog) == [error]
    shown = logging.Formatter().formatException(error.exc_info)  # type: ignore[arg-type]
    # The adapter's own frame, from inside the worker, once.
    assert shown.count("pool_adapters.py") == 1 and "in setup" in shown
    # The other workers failed alike: DEBUG lines, and nothing printed by the workers.
    assert (
        len([r for r in records(caplog, logging.DEBUG) if "failed to start" in r.getMessage()]) >= 1
    )
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.expect_errors("failed to start", "restarts in")
async def test_restarts_failing_in_setup_log_one_traceback(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    from lifecycle_adapters import COUNTER_ENV, FAIL_ENV

    env = {COUNTER_ENV: str(tmp_path / "starts"), FAIL_ENV: ",".join(map(str, range(3, 200)))}
    os.environ.update(env)  # the thread profile reads them here
    try:
        await rt.start_pool(
            "fl",
            "lifecycle_adapters:FlakyStart",
            profile="process",
            size=2,
            env=env,
            heartbeat=None,
            max_restarts=4,
        )
        caplog.clear()
        old = workers(rt, "fl")[0]
        os.kill(old.pid, signal.SIGKILL)  # every restart from now on fails in setup
        await wait_until(lambda: "fl" not in registry(rt).pools, 20)  # it gave up
    finally:
        for key in env:
            os.environ.pop(key, None)
    traced = with_traceback(caplog)
    assert len(traced) == 1, [r.getMessage() for r in traced]
    assert traced[0].name == "aiotp.pool.fl" and traced[0].levelno == logging.ERROR
    others = [r for r in records(caplog, logging.ERROR) if r is not traced[0]]
    # Besides the crash report: the supervisors giving up, one line each, no traceback.
    assert others and all("restarts in" in r.getMessage() for r in others)
    assert len(records(caplog, logging.WARNING)) == 1  # the SIGKILL


@pytest.mark.expect_errors("crashed")
async def test_handle_call_raising_is_one_error_per_crash(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    class Fragile(aiotp.Actor):
        async def handle_call(self, msg: Any, caller: Any) -> Any:
            raise ValueError(f"bad request {msg!r}")

    sup = await rt.spawn(aiotp.Supervisor, [aiotp.ChildSpec("fragile", Fragile)])
    caplog.clear()
    for n in range(2):
        (child,) = await sup.which_children()
        assert child.ref is not None
        with pytest.raises(ValueError, match="bad request"):
            await child.ref.call(n)
        await wait_until(lambda n=n: len(records(caplog, logging.ERROR)) == n + 1, 5)
    errors = records(caplog, logging.ERROR)
    assert [r.name for r in errors] == ["aiotp.actor", "aiotp.actor"]
    assert all(r.exc_info and "crashed" in r.getMessage() for r in errors)
    assert with_traceback(caplog) == errors


async def test_one_pool_can_be_silenced_alone(
    rt: aiotp.Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    await rt.start_pool("quiet", ECHO, profile="process", size=1, heartbeat=None, preload=False)
    await rt.start_pool("loud", ECHO, profile="process", size=1, heartbeat=None, preload=False)
    quiet = logging.getLogger("aiotp.pool.quiet")
    quiet.setLevel(logging.ERROR)
    try:
        caplog.clear()
        for pool in ("quiet", "loud"):
            old = workers(rt, pool)[0]
            os.kill(old.pid, signal.SIGKILL)
            await replaced(rt, pool, 0, old)
        await wait_until(lambda: records(caplog, logging.WARNING), 5)
    finally:
        quiet.setLevel(logging.NOTSET)
    assert [r.name for r in records(caplog, logging.WARNING)] == ["aiotp.pool.loud"]


async def test_tool_error_message_has_no_remote_traceback(rt: aiotp.Runtime) -> None:
    await rt.start_pool("ml", ECHO, profile="process", size=1, heartbeat=None)
    with pytest.raises(aiotp.ToolError) as caught:
        await rt.execute("ml", "crash", {"message": "boom"})
    assert str(caught.value) == "RuntimeError: boom"
    assert "Traceback" in caught.value.traceback and "pool_adapters.py" in caught.value.traceback
