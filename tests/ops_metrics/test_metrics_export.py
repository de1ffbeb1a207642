"""The Prometheus exporter end to end: a real runtime with real worker processes, scraped over
real HTTP on 127.0.0.1 and parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from typing import Any

import httpx
import pytest
from helpers import wait_until
from prometheus_client.parser import text_string_to_metric_families

import aiotp
from aiotp.ops.metrics import Metrics, MetricsServerError, serve_metrics
from aiotp.ops.metrics_events import death_cause, label_of
from aiotp.runtime import call_timing, telemetry
from aiotp.workers.errors import WorkerCrashed
from aiotp.workers.heartbeat import HeartbeatTimeout

ECHO = "pool_adapters:Echo"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """Every sample of one scrape, keyed by (sample name, its labels)."""
    async with httpx.AsyncClient() as client:
        reply = await client.get(url, timeout=10.0)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def restarted_child(sup: Any, old: aiotp.ActorRef) -> aiotp.ActorRef:
    """The supervisor's only child once it is a new one (a restart has no event to wait on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while loop.time() < deadline:
        ref = (await sup.which_children())[0][1]
        if ref is not None and ref is not old:
            return ref  # type: ignore[no-any-return]
        await asyncio.sleep(0.001)
    raise AssertionError("the child was not restarted within 5 s")


class Counter(aiotp.Actor):
    async def init(self) -> None:
        self.n = 0

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        self.n += 1
        return self.n


class Crasher(aiotp.Actor):
    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        raise RuntimeError("crash on purpose")


@pytest.mark.expect_errors("Crasher", "restarts in")
async def test_scrape_reports_calls_pools_deaths_supervisors_and_sessions() -> None:
    async with aiotp.Runtime(name="shop", shutdown_timeout=5.0) as rt:
        exporter = serve_metrics(rt)
        try:
            assert exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
            # Actor calls: timed by the callee's class, one call in SAMPLE_EVERY (the count
            # is the sample scaled back up: 2 samples of 16 calls -> 16).
            counter = await rt.spawn(Counter)
            for _ in range(2 * call_timing.SAMPLE_EVERY):
                await counter.call("bump")
            # A process pool: requests, then a worker SIGKILLed from outside.
            await rt.start_pool("ml", ECHO, profile="process", size=2)
            for i in range(20):
                assert await rt.execute("ml", "echo", {"value": i}) == i
            with pytest.raises(aiotp.ToolError):
                await rt.execute("ml", "crash")
            victim = rt.pool_stats("ml").workers[0].pid
            os.kill(victim, signal.SIGKILL)
            await wait_until(lambda: rt.pool_stats("ml").restarts == 1, timeout=10.0)
            await wait_until(lambda: rt.pool_stats("ml").live == 2, timeout=10.0)
            # A supervisor that restarts its child once, then gives up (intensity 1 in 5 s).
            sup = await rt.spawn(
                aiotp.Supervisor,
                [aiotp.ChildSpec("crasher", Crasher)],
                max_restarts=1,
                max_seconds=5.0,
                name="jobs",
            )
            first = (await sup.which_children())[0][1]
            with pytest.raises(RuntimeError, match="crash on purpose"):
                await first.call("go")
            second = await restarted_child(sup, first)
            with pytest.raises(RuntimeError, match="crash on purpose"):
                await second.call("go")
            await wait_until(lambda: not sup.alive)
            # Sessions in several states.
            store = rt.sessions
            store.create("a")
            store.create("b")
            store.transition("b", "running")
            store.create("c")
            store.transition("c", "running")
            store.transition("c", "done")
            store.create("d")
            store.delete("d")

            s = await scrape(exporter.url)
        finally:
            exporter.close()

    rt_ = {"runtime": "shop"}
    assert value(s, "aiotp_metrics_runtime_up", **rt_) == 1
    assert value(s, "aiotp_metrics_sessions_up", **rt_) == 1
    calls = 2 * call_timing.SAMPLE_EVERY
    assert value(s, "aiotp_actor_call_duration_seconds_count", **rt_, actor="Counter") == calls
    assert (
        value(s, "aiotp_actor_call_duration_seconds_bucket", **rt_, actor="Counter", le="+Inf")
        == calls
    )
    assert value(s, "aiotp_actor_call_duration_seconds_sum", **rt_, actor="Counter") > 0
    ml = {**rt_, "pool": "ml"}
    # 20 echoes and a crash; the SIGKILLed worker held no request.
    assert value(s, "aiotp_pool_requests_total", **ml, outcome="ok") == 20
    assert value(s, "aiotp_pool_requests_total", **ml, outcome="error") == 1
    assert value(s, "aiotp_pool_request_duration_seconds_count", **ml) == 21
    assert value(s, "aiotp_pool_request_duration_seconds_bucket", **ml, le="+Inf") == 21
    assert value(s, "aiotp_pool_queue_wait_seconds_count", **ml) == 21
    assert value(s, "aiotp_pool_queue_length", **ml) == 0
    assert value(s, "aiotp_pool_workers", **ml) == 2
    assert value(s, "aiotp_pool_capacity", **ml) == 2
    assert value(s, "aiotp_pool_worker_starts_total", **ml) == 3
    assert value(s, "aiotp_pool_worker_deaths_total", **ml, cause="exited") == 1
    assert value(s, "aiotp_pool_worker_restarts_total", **ml) == 1
    # The pool's workers are a supervisor's children too.
    workers = {**rt_, "supervisor": "aiotp.pool/ml/workers"}
    assert (
        sum(
            v
            for (n, lb), v in s.items()
            if n == "aiotp_supervisor_restarts_total" and workers.items() <= lb
        )
        == 1
    )
    jobs = {**rt_, "supervisor": "jobs"}
    assert value(s, "aiotp_supervisor_restarts_total", **jobs, child="crasher") == 1
    assert value(s, "aiotp_supervisor_intensity_exceeded_total", **jobs) == 1
    for state, n in (("pending", 1), ("running", 1), ("done", 1), ("failed", 0)):
        assert value(s, "aiotp_sessions", **rt_, state=state) == n
    assert value(s, "aiotp_sessions_created_total", **rt_) == 4
    assert value(s, "aiotp_sessions_ended_total", **rt_, reason="deleted") == 1


async def test_recycles_are_counted_by_cause(rt: aiotp.Runtime) -> None:
    with Metrics(rt) as exporter:
        exporter.serve()
        assert exporter.url is not None
        await rt.start_pool("p", ECHO, profile="thread", size=1, max_requests=3)
        for i in range(4):
            await rt.execute("p", "echo", {"value": i})
        await wait_until(lambda: rt.pool_stats("p").recycled >= 1)
        s = await scrape(exporter.url)
    p = {"runtime": rt.name, "pool": "p"}
    assert value(s, "aiotp_pool_worker_recycles_total", **p, cause="max_requests") >= 1
    assert value(s, "aiotp_pool_worker_deaths_total", **p, cause="exited") == 0
    assert value(s, "aiotp_pool_worker_starts_total", **p) >= 2


async def test_close_leaves_no_thread_no_handler_and_no_call_timing(rt: aiotp.Runtime) -> None:
    before = telemetry.handlers()
    exporter = serve_metrics(rt)
    thread = exporter.thread
    assert thread is not None and thread.is_alive()
    assert set(exporter.handler_ids) <= set(telemetry.handlers())
    assert rt in call_timing.timings
    port = exporter.port
    assert port is not None
    exporter.close()
    assert not thread.is_alive()
    assert telemetry.handlers() == before
    assert rt not in call_timing.timings
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0)
    exporter.close()  # idempotent
    with pytest.raises(aiotp.AiotpError, match="CLOSED"):
        exporter.serve()


async def test_two_runtimes_side_by_side_count_only_their_own() -> None:
    async with aiotp.Runtime(name="left") as left, aiotp.Runtime(name="right") as right:
        with Metrics(left) as a, Metrics(right) as b, Metrics(right) as b2:
            a.serve()
            b.serve()
            assert a.url and b.url and a.port != b.port
            # Same pool name in both: the worker events must not cross over.
            await left.start_pool("p", ECHO, profile="thread", size=1)
            await right.start_pool("p", ECHO, profile="thread", size=2)
            ref = await right.spawn(Counter)
            every = call_timing.SAMPLE_EVERY
            for _ in range(every):  # one sample
                await ref.call("x")
            sa, sb = await scrape(a.url), await scrape(b.url)
            b2.close()  # the other exporter of `right` keeps its call timing
            for _ in range(every):
                await ref.call("x")
            sb2 = await scrape(b.url)
    assert value(sa, "aiotp_pool_worker_starts_total", runtime="left", pool="p") == 1
    assert value(sb, "aiotp_pool_worker_starts_total", runtime="right", pool="p") == 2
    assert not any(dict(lb).get("runtime") == "right" for _, lb in sa)
    assert not any(dict(lb).get("runtime") == "left" for _, lb in sb)
    assert (
        value(sa, "aiotp_actor_call_duration_seconds_count", runtime="left", actor="Counter") == 0
    )
    assert (
        value(sb, "aiotp_actor_call_duration_seconds_count", runtime="right", actor="Counter")
        == every
    )
    assert (
        value(sb2, "aiotp_actor_call_duration_seconds_count", runtime="right", actor="Counter")
        == 2 * every
    )
    assert not call_timing.timings


async def test_without_call_latency_calls_are_not_timed(rt: aiotp.Runtime) -> None:
    with Metrics(rt, call_latency=False) as exporter:
        exporter.serve()
        assert exporter.url is not None and rt not in call_timing.timings
        ref = await rt.spawn(Counter)
        await ref.call("x")
        s = await scrape(exporter.url)
    assert (
        value(s, "aiotp_actor_call_duration_seconds_count", runtime=rt.name, actor="Counter") == 0
    )
    assert value(s, "aiotp_actors", runtime=rt.name) >= 1


class AsyncStore:
    """A store that answers by coroutine, as the Redis store does (its stats come from the
    server); `down` makes it fail as an unreachable server would."""

    def __init__(self) -> None:
        self.down = False

    async def stats(self) -> Any:
        from aiotp.session_store.store import StoreStats

        if self.down:
            raise ConnectionError("redis is down")
        return StoreStats(7, 9, 1, 1, 0, 3, 100, 0)

    async def count_by_state(self) -> dict[str, int]:
        return {"pending": 2, "running": 5}

    async def sweep_forever(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        pass


async def test_a_store_that_answers_by_coroutine_is_awaited_on_the_loop() -> None:
    store = AsyncStore()
    async with aiotp.Runtime(name="r", sessions=store) as rt:
        with Metrics(rt) as exporter:
            exporter.serve()
            assert exporter.url is not None
            s = await scrape(exporter.url)
            store.down = True
            down = await scrape(exporter.url)
    assert value(s, "aiotp_sessions", runtime="r", state="running") == 5
    assert value(s, "aiotp_sessions_created_total", runtime="r") == 9
    assert value(s, "aiotp_metrics_sessions_up", runtime="r") == 1
    # A store that is down costs the session metrics, not the scrape.
    assert value(down, "aiotp_metrics_sessions_up", runtime="r") == 0
    assert value(down, "aiotp_metrics_runtime_up", runtime="r") == 1
    assert ("aiotp_sessions", frozenset({("runtime", "r"), ("state", "running")})) not in down


async def test_port_in_use_and_bad_host_are_typed_errors(rt: aiotp.Runtime) -> None:
    before = telemetry.handlers()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsServerError, match=f"127.0.0.1:{port}") as info:
            serve_metrics(rt, port=port)
        assert info.value.port == port and isinstance(info.value, OSError)
    with pytest.raises(MetricsServerError, match="does not resolve"):
        serve_metrics(rt, host="no-such-host.invalid")
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        serve_metrics(rt, port=70000)
    with pytest.raises(TypeError, match="port must be an int"):
        serve_metrics(rt, port="9100")  # type: ignore[arg-type]
    # Nothing left behind by the failed attempts.
    assert telemetry.handlers() == before and rt not in call_timing.timings
    # A second serve of the same exporter is refused, naming the phase.
    with Metrics(rt) as exporter:
        exporter.serve()
        with pytest.raises(aiotp.AiotpError, match="SERVING"):
            exporter.serve()


async def test_scrape_of_a_blocked_loop_answers_without_runtime_metrics(
    rt: aiotp.Runtime,
) -> None:
    """A scrape while the loop is stuck gives up after scrape_timeout and still answers."""
    with Metrics(rt, scrape_timeout=0.2) as exporter:
        exporter.serve()
        url = exporter.url
        assert url is not None
        answered = threading.Event()
        got: list[Samples] = []

        def scrape_from_thread() -> None:
            try:
                text = httpx.get(url, timeout=10.0).text
                got.append(
                    {
                        (s.name, frozenset(s.labels.items())): s.value
                        for f in text_string_to_metric_families(text)
                        for s in f.samples
                    }
                )
            finally:
                answered.set()

        thread = threading.Thread(target=scrape_from_thread)
        thread.start()
        answered.wait(10.0)  # blocks the loop on purpose until the scrape has answered
        await asyncio.to_thread(thread.join, 10.0)
        assert got, "the scrape did not answer"
        assert value(got[0], "aiotp_metrics_runtime_up", runtime=rt.name) == 0
        # Once the loop is free again, the runtime answers.
        s = await scrape(url)
        assert value(s, "aiotp_metrics_runtime_up", runtime=rt.name) == 1


def test_death_causes_and_labels() -> None:
    assert death_cause("normal") is None and death_cause(("shutdown", 1)) is None
    assert death_cause(HeartbeatTimeout("missed 3")) == "heartbeat"
    assert death_cause("killed") == "killed"
    assert death_cause(WorkerCrashed("worker w exited: the process exited")) == "exited"
    assert death_cause(WorkerCrashed("worker w exited: protocol error: bad frame")) == "protocol"
    assert death_cause(RuntimeError("bug")) == "error"
    assert label_of(("aiotp.pool", "ml", "workers")) == "aiotp.pool/ml/workers"
    assert label_of("jobs") == "jobs"
