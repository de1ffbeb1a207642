"""The exporter under hostile clients and odd lives: slow clients, close on the loop, a pool
restarted under its name, a loop whose clock has 1 ms steps, the module's import forms.
Real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from helpers import wait_until
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import aiotp
from aiotp.ops.metrics import Metrics, serve_metrics
from aiotp.ops.metrics_server import MAX_REQUESTS, MetricsServer

ECHO = "pool_adapters:Echo"
GIVE_UP = 8.0  # seconds after which a trickling client stops by itself (the test then fails)


class Trickler:
    """A client that sends a request line, then one header byte every `every` seconds, and
    never finishes its request: before the fix it held the server's only thread."""

    def __init__(self, port: int, every: float = 0.5) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        self.stop = threading.Event()
        self.gave_up = threading.Event()
        self.cut = threading.Event()  # the server shut the connection
        self.every = every
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        end = time.monotonic() + GIVE_UP
        while not self.stop.wait(self.every):
            if time.monotonic() > end:
                self.gave_up.set()
                break
            try:
                self.sock.sendall(b"X")
            except OSError:
                self.cut.set()
                break
        self.sock.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def tricklers() -> Iterator[list[Trickler]]:
    made: list[Trickler] = []
    yield made
    for t in made:
        t.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_slow_client_does_not_hold_other_scrapes_nor_close(
    rt: aiotp.Runtime, tricklers: list[Trickler]
) -> None:
    exporter = serve_metrics(rt)
    assert exporter.port is not None and exporter.url is not None
    slow = Trickler(exporter.port)
    tricklers.append(slow)
    async with httpx.AsyncClient() as client:
        await wait_until(
            lambda: exporter._server is not None and exporter._server.requests_in_progress == 1
        )
        reply = await client.get(exporter.url, timeout=GIVE_UP / 2)
    assert reply.status_code == 200 and "aiotp_metrics_runtime_up" in reply.text
    # close() on the loop thread, as the runner calls it: it cuts the slow client off.
    exporter.close()
    assert not slow.gave_up.is_set()  # close did not wait for the client to give up
    assert exporter.thread is not None and not exporter.thread.is_alive()
    assert exporter._server is not None and exporter._server.requests_in_progress == 0


async def test_a_request_past_its_deadline_is_cut_off(tricklers: list[Trickler]) -> None:
    server = MetricsServer(CollectorRegistry(), deadline=0.3)
    try:
        slow = Trickler(server.port, every=0.05)
        tricklers.append(slow)
        await asyncio.to_thread(slow.thread.join, GIVE_UP + 1)
        assert slow.cut.is_set() and not slow.gave_up.is_set()
    finally:
        server.close()


async def test_requests_past_the_bound_get_503_and_close_cuts_the_rest() -> None:
    server = MetricsServer(CollectorRegistry())
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_REQUESTS)]
    try:
        for s in stalled:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
        await wait_until(lambda: server.requests_in_progress == MAX_REQUESTS, timeout=GIVE_UP)
        with socket.create_connection(("127.0.0.1", server.port), timeout=GIVE_UP) as extra:
            assert extra.recv(100).startswith(b"HTTP/1.0 503")
        server.close()  # every stalled client is cut off, and it does not wait for them
        assert not server.thread.is_alive() and server.requests_in_progress == 0
        for s in stalled:
            s.settimeout(GIVE_UP)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""
    finally:
        server.close()
        for s in stalled:
            s.close()


async def test_pool_counters_survive_a_restart_of_the_pool_under_its_name(
    rt: aiotp.Runtime,
) -> None:
    with Metrics(rt) as exporter:
        await rt.start_pool("p", ECHO, profile="thread", size=1)
        for i in range(4):
            await rt.execute("p", "echo", {"value": i})
        exporter.scrape()  # the instance is seen...
        await rt.execute("p", "echo", {"value": 4})  # ...and serves one more before it stops
        with pytest.raises(aiotp.ToolError):
            await rt.execute("p", "crash")
        await rt.stop_pool("p")
        await rt.start_pool("p", ECHO, profile="thread", size=1)
        await rt.execute("p", "echo", {"value": 5})
        s = samples(exporter.scrape().decode())
    key = {("runtime", rt.name), ("pool", "p")}
    assert s[("aiotp_pool_requests_total", frozenset(key | {("outcome", "ok")}))] == 6
    assert s[("aiotp_pool_requests_total", frozenset(key | {("outcome", "error")}))] == 1
    assert s[("aiotp_pool_request_duration_seconds_count", frozenset(key))] == 7
    assert s[("aiotp_pool_request_duration_seconds_bucket", frozenset(key | {("le", "+Inf")}))] == 7


def test_pool_latency_is_finer_than_a_loop_clock_of_1_ms_steps() -> None:
    """uvloop's loop.time() moves in 1 ms steps: durations measured with it are all whole ms."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with aiotp.Runtime(name="fine") as rt:
            with Metrics(rt) as exporter:
                await rt.start_pool("p", ECHO, profile="thread", size=1)
                capacity = rt.pool_stats("p").capacity
                await asyncio.gather(
                    *(rt.execute("p", "sleep", {"seconds": 0.0003}) for _ in range(capacity * 8))
                )
                return samples(exporter.scrape().decode())

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        s = runner.run(main())
    key = frozenset({("runtime", "fine"), ("pool", "p")})
    for name in ("aiotp_pool_request_duration_seconds", "aiotp_pool_queue_wait_seconds"):
        assert s[(f"{name}_count", key)] > 0
        total_ms = s[(f"{name}_sum", key)] * 1000.0
        assert abs(total_ms - round(total_ms)) > 1e-6, (name, total_ms)


def test_aiotp_metrics_imports_as_a_module() -> None:
    import aiotp.metrics
    import aiotp.ops.metrics
    from aiotp.metrics import Metrics as M
    from aiotp.metrics import MetricsServerError, serve_metrics

    assert aiotp.metrics.serve_metrics is serve_metrics is aiotp.ops.metrics.serve_metrics
    assert M is aiotp.ops.metrics.Metrics
    assert MetricsServerError is aiotp.ops.metrics.MetricsServerError
    assert set(aiotp.metrics.__all__) == set(aiotp.ops.metrics.__all__)
