from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from actors import Counter, Recorder

import aiotp
from aiotp import telemetry


class Ordered(aiotp.Actor):
    async def init(self, label: str, log: list[Any], hang: bool = False) -> None:
        self.label = label
        self.log = log
        self.hang = hang

    async def terminate(self, reason: Any) -> None:
        if self.hang:
            await asyncio.sleep(60)
        self.log.append((self.label, reason))


async def test_leaving_the_runtime_stops_actors_in_reverse_start_order() -> None:
    log: list[Any] = []
    async with aiotp.Runtime() as rt:
        for label in "abc":
            await rt.spawn(Ordered, label, log)
    assert log == [("c", "shutdown"), ("b", "shutdown"), ("a", "shutdown")]


async def test_shutdown_kills_an_actor_whose_terminate_hangs() -> None:
    log: list[Any] = []
    async with aiotp.Runtime(shutdown_timeout=0.1) as rt:
        await rt.spawn(Ordered, "fine", log)
        hung = await rt.spawn(Ordered, "hung", log, True)
        started = time.monotonic()
    assert time.monotonic() - started >= 0.1
    assert log == [("fine", "shutdown")]
    assert hung.exit_reason == "killed"
    assert rt.actors() == []


async def test_children_are_stopped_by_their_owner_not_twice() -> None:
    async with aiotp.Runtime() as rt:
        parent = await rt.spawn(Recorder, True)
        child = await parent.call(("spawn_linked", Counter))
    assert parent.exit_reason == "shutdown"
    assert not child.alive


def test_no_task_is_left_pending_after_aiotp_run() -> None:
    script = textwrap.dedent(
        """
        import asyncio, aiotp

        class Busy(aiotp.Actor):
            async def handle_call(self, msg, caller):
                return aiotp.NOREPLY
            async def handle_info(self, msg):
                await asyncio.sleep(60)

        async def main(rt):
            refs = [await rt.spawn(Busy) for _ in range(50)]
            for r in refs:
                r.send("sleep")
                call = asyncio.ensure_future(r.call("park", timeout=None))
                call.add_done_callback(lambda f: f.exception())
            rt.send_after(refs[0], 60, "late")
            await asyncio.sleep(0.01)
            return "done"

        print(aiotp.run(main, shutdown_timeout=0.05))
        """
    )
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert "Task was destroyed but it is pending" not in out.stderr
    assert "was never retrieved" not in out.stderr


async def test_telemetry_reports_actor_lifecycle(rt: aiotp.Runtime) -> None:
    events: list[tuple[Any, ...]] = []
    telemetry.attach("t1", ("aiotp", "actor"), lambda e, m, md: events.append((e, md)))
    try:
        c = await rt.spawn(Counter, name="tele")
        await rt.stop(c, "normal")
    finally:
        assert telemetry.detach("t1")
    assert [e for e, _ in events] == [("aiotp", "actor", "spawned"), ("aiotp", "actor", "exited")]
    assert events[1][1]["reason"] == "normal" and events[1][1]["name"] == "tele"


@pytest.mark.expect_errors("was detached")
def test_telemetry_handler_that_raises_is_detached_and_never_breaks_the_emitter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[Any] = []

    def bad(event: Any, m: Any, md: Any) -> None:
        raise RuntimeError("handler bug")

    telemetry.attach("bad", ("x",), bad)
    telemetry.attach("good", ("x", "y"), lambda e, m, md: calls.append(e))
    try:
        telemetry.execute(("x", "y"), {"n": 1}, {})
        telemetry.execute(("x", "y"), {"n": 2}, {})
        assert "bad" not in telemetry.handlers()
        assert calls == [("x", "y"), ("x", "y")]
        assert "handler bug" in caplog.text or "was detached" in caplog.text
    finally:
        telemetry.detach("bad")
        telemetry.detach("good")


def test_telemetry_attach_rejects_duplicates_and_non_callables() -> None:
    telemetry.attach("dup", ("a",), lambda e, m, md: None)
    try:
        with pytest.raises(ValueError):
            telemetry.attach("dup", ("a",), lambda e, m, md: None)
        with pytest.raises(TypeError):
            telemetry.attach("nc", ("a",), "not callable")  # type: ignore[arg-type]
    finally:
        telemetry.detach("dup")
    assert telemetry.detach("dup") is False
