"""Adapters for the pool tests (importable by path from worker processes: tests/ is on
PYTHONPATH for children, see tests/conftest.py)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiotp


class Echo(aiotp.Adapter):
    thread_safe = True

    def setup(self) -> None:
        self.pid = os.getpid()

    @aiotp.tool
    def echo(self, value: Any = None) -> Any:
        return value

    @aiotp.tool
    def whoami(self) -> str:
        return f"{os.getpid()}:{threading.get_ident()}"

    @aiotp.tool
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @aiotp.tool
    def hang(self) -> None:
        time.sleep(3600)

    @aiotp.tool
    def crash(self, message: str = "boom") -> None:
        raise RuntimeError(message)

    @aiotp.tool
    def die(self) -> None:
        os._exit(3)

    @aiotp.tool
    def count(self, n: int, delay: float = 0.0) -> Iterator[int]:
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield i

    @aiotp.tool
    def garbage(self) -> None:
        """Breaks the wire protocol on purpose: a frame header announcing 4 GiB."""
        from aiotp.workers import host

        assert host.current_socket is not None
        host.current_socket.sendall(b"\xff\xff\xff\xffnot msgpack")
        time.sleep(3600)

    @aiotp.tool
    async def async_echo(self, value: Any = None) -> Any:
        return value


class BadSetup(aiotp.Adapter):
    def setup(self) -> None:
        raise RuntimeError("model file missing: /nowhere/weights.bin")

    @aiotp.tool
    def noop(self) -> None:
        return None
