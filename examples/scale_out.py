"""Past one machine: two app instances share their sessions (Redis) and their workers (Ray).

Run it with ``make scale-out-demo`` (or ``.venv/bin/python examples/scale_out.py``). It needs
`redis-server` (the distribution's package) and Ray (``pip install 'aiotp[ray]'``), and starts,
on 127.0.0.1 only:

- a redis-server on a free port (or uses ``--redis URL``);
- a Ray head node (``ray start --head``, or uses ``--ray ADDRESS``);
- two app instances, A and B: two processes, each a runtime named "shop" with a
  `RedisSessionStore` on that server and a pool "counter" of 2 Ray workers, each serving a
  one-line JSON protocol on its own port (standing in for two replicas of a web service).

Then it sends one session's requests alternately to A and B. Each request increments a counter
kept in the worker's `WorkerSession` state: a session started on A is pinned there (the pin is
recorded in Redis), and when B handles its next request, B routes it to that same Ray worker
(by name, in the runtime's namespace), so the count goes on 1, 2, 3, ... whichever instance
answers. A second session, started on B, shows the same from the other side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiotp

HERE = Path(__file__).resolve().parent


class Counter(aiotp.Adapter):
    """Counts a session's requests in the worker that holds the session."""

    thread_safe = True

    @aiotp.tool
    def bump(self, instance: str, *, session: aiotp.WorkerSession) -> dict[str, Any]:
        count = session.state.get("count", 0) + 1
        session.state["count"] = count
        return {"count": count, "worker_pid": os.getpid(), "served_by_instance": instance}


# -- one app instance ---------------------------------------------------------------------
async def instance(name: str, redis_url: str, ray_address: str, port: int) -> None:
    store = aiotp.RedisSessionStore(redis_url, ttl=600, prefix="scale-out")
    async with aiotp.Runtime(name="shop", sessions=store) as rt:
        await rt.start_pool(
            "counter",
            "scale_out:Counter",
            profile="ray",
            size=2,
            address=ray_address,
            affinity="strict_queue",
            ray_options={"num_cpus": 0.1, "runtime_env": {"env_vars": {"PYTHONPATH": str(HERE)}}},
        )

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while line := await reader.readline():
                    request = json.loads(line)
                    try:
                        result = await rt.execute(
                            "counter", "bump", {"instance": name}, session=request["session"]
                        )
                        reply = {"ok": True, **result}
                    except aiotp.AiotpError as exc:
                        reply = {"ok": False, "error": type(exc).__name__, "detail": str(exc)}
                    writer.write(json.dumps(reply).encode() + b"\n")
                    await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", port)
        print(f"instance {name} ready on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()


# -- the driver -----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_line(proc: subprocess.Popen[str], fragment: str, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if fragment in line:
            return
        if not line and proc.poll() is not None:
            break
    raise RuntimeError(f"{proc.args!r} did not print {fragment!r} within {timeout} s")


class Services:
    """redis-server and a Ray head, started for the demo and stopped after it."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="aiotp-scale-out-"))
        self.redis: subprocess.Popen[bytes] | None = None
        self.ray_started = False
        self.env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def start_redis(self) -> str:
        if shutil.which("redis-server") is None:
            raise SystemExit(
                "redis-server not found: apt-get install redis-server (or --redis URL)"
            )
        port = _free_port()
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return f"redis://127.0.0.1:{port}/0"
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def start_ray(self) -> str:
        port = _free_port()
        ray = str(Path(sys.executable).with_name("ray"))
        subprocess.run(
            [
                ray,
                "start",
                "--head",
                "--port",
                str(port),
                "--node-ip-address",
                "127.0.0.1",
                "--num-cpus",
                "2",
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
            ],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
        self.ray_started = True
        # "auto": the head on this machine, found through its session directory (which also
        # holds the cluster's authentication token, so nothing else needs configuring).
        return "auto"

    def stop(self) -> None:
        if self.ray_started:
            ray = str(Path(sys.executable).with_name("ray"))
            subprocess.run([ray, "stop", "--force"], env=self.env, capture_output=True, timeout=120)
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def ask(port: int, session: str) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(json.dumps({"session": session}).encode() + b"\n")
        reply: dict[str, Any] = json.loads(conn.makefile().readline())
        return reply


def drive(redis_url: str | None, ray_address: str | None) -> int:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise SystemExit("Ray is not installed: pip install 'aiotp[ray]'")
    services = Services()
    instances: list[subprocess.Popen[str]] = []
    try:
        redis_url = redis_url or services.start_redis()
        ray_address = ray_address or services.start_ray()
        ports = {"A": _free_port(), "B": _free_port()}
        for name, port in ports.items():
            proc = subprocess.Popen(
                [sys.executable, __file__, "instance", name, redis_url, ray_address, str(port)],
                stdout=subprocess.PIPE,
                text=True,
                env=services.env,
            )
            instances.append(proc)
        for proc in instances:
            try:
                _wait_line(proc, "ready", 120)
            except RuntimeError:
                for log in sorted(services.tmp.glob("instance-*.log")):
                    print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
                raise
        print(f"redis {redis_url}, ray {ray_address}, instances A and B ready")
        print(f"{'session':<10} {'asked':<6} {'count':>5}  {'worker pid':>10}")
        ok = True
        for session, order in (("user-1", "ABABA"), ("user-2", "BABAB")):
            pids = set()
            for step, name in enumerate(order, 1):
                reply = ask(ports[name], session)
                if not reply.get("ok"):
                    print(f"{session:<10} {name:<6} error: {reply}")
                    ok = False
                    continue
                pids.add(reply["worker_pid"])
                print(f"{session:<10} {name:<6} {reply['count']:>5}  {reply['worker_pid']:>10}")
                ok = ok and reply["count"] == step
            ok = ok and len(pids) == 1
        print("one worker per session, whichever instance asked: " + ("yes" if ok else "NO"))
        return 0 if ok else 1
    finally:
        for proc in instances:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in instances:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        services.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "instance":
        name, redis_url, ray_address, port = sys.argv[2:6]
        asyncio.run(instance(name, redis_url, ray_address, int(port)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="an existing Redis (redis://host:port/db)")
    parser.add_argument("--ray", help="an existing Ray cluster's address (host:port)")
    args = parser.parse_args()
    raise SystemExit(drive(args.redis, args.ray))


if __name__ == "__main__":
    main()
