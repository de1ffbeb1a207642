"""examples/web_service.py under real uvicorn on 127.0.0.1, driven by httpx: a burst of requests
while a worker process is SIGKILLed, then SIGTERM while streams are in flight.

Checks: every request sent before SIGTERM ends with a response (200, or a typed 503 naming
`WorkerCrashed` for the requests the dead worker held); the streams in flight at SIGTERM finish;
the server stops the application and exits within its graceful time plus the application's
shutdown timeout, logging nothing at ERROR; no process of it is left."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _wait_healthy(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited during start-up"
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the server never became healthy")


async def _predict(client: httpx.AsyncClient, i: int) -> httpx.Response:
    return await client.post(
        "/predict",
        json={"x": float(i), "work_ms": 5.0},
        headers={"X-Session-Id": f"user-{i % 7}"},
    )


def _worker_pids(snapshot: dict[str, Any], pool: str) -> list[int]:
    (info,) = [p for p in snapshot["pools"] if p["name"] == pool]
    return [w["pid"] for w in info["workers"] if w["pid"] is not None]


async def test_web_service_survives_a_killed_worker_and_stops_gracefully() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "web_service.py"), "--port", str(port), "--graceful", "20"],
        cwd=EXAMPLES,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            await _wait_healthy(client, proc)
            snap = (await client.get("/snapshot")).json()
            ml_workers = _worker_pids(snap, "ml")
            assert len(ml_workers) == 2

            # Both workers hold a slow request (1.5 s) when a burst arrives and queues behind
            # them; then one worker is SIGKILLed in the middle of its slow request.
            slow = [
                asyncio.ensure_future(client.post("/predict", json={"x": 1.0, "work_ms": 1500.0}))
                for _ in range(2)
            ]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                (ml,) = [
                    p for p in (await client.get("/snapshot")).json()["pools"] if p["name"] == "ml"
                ]
                if all(w["busy"] for w in ml["workers"]):
                    break
                await asyncio.sleep(0.01)
            burst = [asyncio.ensure_future(_predict(client, i)) for i in range(300)]
            await asyncio.sleep(0.05)
            os.kill(ml_workers[0], signal.SIGKILL)
            slow_statuses = sorted(r.status_code for r in await asyncio.gather(*slow))
            assert slow_statuses == [200, 503], slow_statuses  # the killed worker's request
            responses = await asyncio.gather(*burst)
            statuses: dict[int, int] = {}
            for r in responses:
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    assert r.status_code == 503, r.text
                    assert r.json()["error"] in ("WorkerCrashed", "SessionWorkerLost"), r.text
                    assert "Traceback" not in r.text
            assert statuses.get(200, 0) > 0, statuses
            print("burst with a SIGKILLed worker:", statuses)

            # The pool healed: a new worker replaced the dead one.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pids = _worker_pids((await client.get("/snapshot")).json(), "ml")
                if len(pids) == 2 and ml_workers[0] not in pids:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the pool never replaced its killed worker")
            assert (await client.get("/lookup/abc")).json() == {"value": "ABC"}
            hits = (await client.get("/hits")).json()["hits"]
            assert hits == statuses[200] + 1  # every successful prediction, the slow one too
            all_pids = _worker_pids((await client.get("/snapshot")).json(), "ml")

            # SIGTERM while streams are in flight: they finish, then the server exits 0.
            streams = [asyncio.ensure_future(client.get("/count/300")) for _ in range(4)]
            await asyncio.sleep(0.1)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            for done in await asyncio.gather(*streams):
                assert done.status_code == 200
                lines = done.text.splitlines()
                assert len(lines) == 300 and '"error"' not in done.text, done.text[-200:]
        _, err = await asyncio.to_thread(proc.communicate, None, 60)
        elapsed = time.monotonic() - sent
        # uvicorn re-raises the signal after its graceful stop (its convention): -SIGTERM.
        assert proc.returncode in (0, -signal.SIGTERM), err.decode()
        log = err.decode()
        assert "application 'web' stopped" in log, log  # the lifespan stopped the application
        assert "ERROR" not in log and "Traceback" not in log, log
        assert elapsed < 20 + 10 + 5  # graceful time + the application's shutdown + slack
        print(f"stopped {elapsed * 1000:.0f} ms after SIGTERM")
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in all_pids) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not any(_alive(p) for p in all_pids), "a worker process outlived the server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
