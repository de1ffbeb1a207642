"""A throwaway redis-server on a free loopback port, for the Redis session store's tests.

`RedisServer.start(tmp_dir)` starts ``redis-server`` with no persistence, bound to 127.0.0.1 on a
port picked free, and returns once it answers PING (or raises after ``deadline`` seconds);
`stop` ends it (SIGTERM, then SIGKILL) and reaps it; `kill` is SIGKILL for outage tests.
`require_redis()` skips the caller when redis-server or the redis package is missing, or fails
it when ``AIOTP_REQUIRE_REDIS=1`` (CI installs both and must run these tests).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["INSTALL_HINT", "RedisServer", "require_redis"]

INSTALL_HINT = (
    "redis-server not found: apt-get install redis-server (and pip install 'aiotp[redis]')"
)


def require_redis() -> str:
    """The path of redis-server; skip (or fail under AIOTP_REQUIRE_REDIS=1) without it."""
    path = shutil.which("redis-server")
    try:
        import redis  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("AIOTP_REQUIRE_REDIS") == "1":
            pytest.fail(f"AIOTP_REQUIRE_REDIS=1 but {INSTALL_HINT}", pytrace=False)
        pytest.skip(INSTALL_HINT)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.url = f"redis://127.0.0.1:{port}/0"

    @classmethod
    def start(cls, tmp_dir: Path, deadline: float = 10.0) -> RedisServer:
        """A server on a free port (picked again if it was taken meanwhile)."""
        for _attempt in range(4):
            try:
                return cls.start_on(tmp_dir, _free_port(), deadline)
            except RuntimeError:
                pass
        return cls.start_on(tmp_dir, _free_port(), deadline)

    @classmethod
    def start_on(cls, tmp_dir: Path, port: int, deadline: float = 10.0) -> RedisServer:
        """A server on `port`, answering PING; `RuntimeError` with its log otherwise."""
        binary = require_redis()
        log = tmp_dir / f"redis-{port}.log"
        proc = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(tmp_dir),
                "--logfile", str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        server = cls(proc, port, log)
        until = time.monotonic() + deadline
        while time.monotonic() < until and proc.poll() is None:
            if _pong(port):
                return server
            time.sleep(0.02)
        server.stop()
        text = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        raise RuntimeError(f"redis-server on port {port} did not answer PING:\n{text}")

    def kill(self) -> None:
        """SIGKILL, as a crash would (reaped at once)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10)
