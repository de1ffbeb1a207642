"""The runtime's side of a zygote (see `aiotp.workers.zygote`): start it, ask it to fork.

One zygote per pool. Fork requests are serialised on its control socket (each takes about a
millisecond); the pool still starts workers in batches, so their ``setup()`` runs in parallel.
A zygote that failed to start or died is marked unusable and the pool falls back to plain starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
import subprocess
import sys

import msgpack

__all__ = ["Zygote"]

_log = logging.getLogger("aiotp.workers")
_PID = struct.Struct(">i")


class Zygote:
    def __init__(self, adapter: str, ctrl: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        self.adapter = adapter
        self._ctrl = ctrl
        self._proc = proc
        self._lock = asyncio.Lock()
        self.usable = True
        self._pidfd: int | None = None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            self._pidfd = os.pidfd_open(proc.pid)
            loop.add_reader(self._pidfd, self._exited)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    async def start(
        cls, adapter: str, env: dict[str, str] | None, timeout: float = 30.0
    ) -> Zygote | None:
        """A ready zygote for `adapter`, or None when one cannot be had (the caller falls back)."""
        parent, child = socket.socketpair()
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.update(
            AIOTP_ZYGOTE_FD=str(child.fileno()),
            AIOTP_ADAPTER=adapter,
            AIOTP_PARENT_PID=str(os.getpid()),
        )
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "aiotp.workers.zygote"],
                pass_fds=(child.fileno(),),
                env=full_env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except (OSError, ValueError):
            parent.close()
            return None
        finally:
            child.close()
        parent.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            answer = await asyncio.wait_for(loop.sock_recv(parent, 4096), timeout)
        except (TimeoutError, OSError):
            answer = b""
        except asyncio.CancelledError:
            parent.close()  # a cancelled start leaves no template behind
            proc.kill()
            await loop.run_in_executor(None, proc.wait)
            raise
        if answer != b"R":
            if answer.startswith(b"F"):
                _log.debug("zygote for %s could not preload: %s", adapter, answer[1:].decode())
            parent.close()
            with contextlib.suppress(Exception):
                proc.kill()
                await asyncio.get_running_loop().run_in_executor(None, proc.wait)
            return None
        return cls(adapter, parent, proc)

    async def fork(
        self, worker_id: str, threads: int, max_frame: int, sock: socket.socket, err_fd: int
    ) -> int:
        """Fork one worker serving on `sock` with stderr on `err_fd`; returns its pid.

        Safe to cancel: once the request is sent, the template forks whatever we do, and its
        answer would be read by the next fork as that fork's pid. So a cancelled fork still
        takes the answer (bounded) and kills the worker it names before re-raising.
        """
        async with self._lock:
            exchange = asyncio.ensure_future(
                self._exchange(worker_id, threads, max_frame, sock, err_fd)
            )
            try:
                return await asyncio.shield(exchange)
            except asyncio.CancelledError:
                await asyncio.wait({exchange}, timeout=5.0)
                if exchange.done() and not exchange.cancelled() and exchange.exception() is None:
                    pid = exchange.result()
                    for kill in (os.killpg, os.kill):  # its group, or itself before setsid
                        with contextlib.suppress(OSError):
                            kill(pid, signal.SIGKILL)
                else:
                    exchange.cancel()
                    self.usable = False  # its answer may still come: never read it as another's
                raise

    async def _exchange(
        self, worker_id: str, threads: int, max_frame: int, sock: socket.socket, err_fd: int
    ) -> int:
        loop = asyncio.get_running_loop()
        request = msgpack.packb([worker_id, threads, max_frame])
        try:
            socket.send_fds(self._ctrl, [request], [sock.fileno(), err_fd])
            answer = b""
            while len(answer) < 4:
                chunk = await asyncio.wait_for(loop.sock_recv(self._ctrl, 4 - len(answer)), 5)
                if not chunk:
                    raise ConnectionError("zygote closed its socket")
                answer += chunk
        except (OSError, TimeoutError, ConnectionError) as exc:
            self.usable = False
            raise OSError(f"zygote for {self.adapter} failed to fork: {exc}") from exc
        (pid,) = _PID.unpack(answer)
        return int(pid)

    def _exited(self) -> None:
        self.usable = False
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._proc.poll()

    def close(self) -> None:
        """Close the control socket: the zygote exits on EOF (its idle workers die with it)."""
        self.usable = False
        self._ctrl.close()
        with contextlib.suppress(Exception):
            self._proc.terminate()

    async def aclose(self, timeout: float = 2.0) -> None:
        """`close`, then wait for the zygote to exit and reap it (SIGKILL after `timeout`)."""
        self.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._proc.poll() is None:
            if loop.time() > deadline:
                with contextlib.suppress(Exception):
                    self._proc.kill()
                await loop.run_in_executor(None, self._proc.wait)
                break
            await asyncio.sleep(0.002)
        if self._pidfd is not None:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
