"""The runtime's side of a zygote (see `aiotp.workers.zygote`): start it, ask it to fork.

One zygote per pool. Fork requests are serialised on its control socket (each takes about a
millisecond); the pool still starts workers in batches, so their ``setup()`` runs in parallel.
A zygote that failed to start or died is marked unusable and the pool falls back to plain starts.
`Zygote.start` returns while the template is still starting (see `take_turn`).
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

import msgpack

from aiotp.workers import interpreter

__all__ = ["Zygote"]

_log = logging.getLogger("aiotp.workers")
_PID = struct.Struct(">i")


class Zygote:
    def __init__(
        self, adapter: str, ctrl: socket.socket, proc: subprocess.Popen[bytes], timeout: float
    ) -> None:
        self.adapter = adapter
        self._ctrl = ctrl
        self._proc = proc
        self._lock = asyncio.Lock()
        #: Not known to be dead: starting, or ready. False once it failed, died or was closed.
        self.usable = True
        self._direct_taken = False
        self._pidfd: int | None = None
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[bool] = loop.create_future()
        # The READY byte is read by a plain reader callback, not a task: close() can remove it
        # synchronously before closing the socket, so no reader outlives its descriptor.
        ctrl.setblocking(False)
        loop.add_reader(ctrl.fileno(), self._on_ready_readable)
        self._ready_timer: asyncio.TimerHandle | None = loop.call_later(
            timeout, self._not_ready, "did not become ready in time"
        )
        with contextlib.suppress(OSError):
            self._pidfd = os.pidfd_open(proc.pid)
            loop.add_reader(self._pidfd, self._exited)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @classmethod
    async def start(
        cls,
        adapter: str,
        env: dict[str, str] | None,
        timeout: float = 30.0,
        *,
        direct_first: bool = True,
    ) -> Zygote | None:
        """A starting zygote for `adapter` (it is ready later: `wait_ready`), or None when its
        process cannot be started at all (the caller falls back to plain starts).

        It does not wait for the template to be ready, so that the pool can start its first
        worker afresh meanwhile (`take_turn`). A template that fails to preload (the adapter's
        module does not import, say) or is not ready within `timeout` is killed and marked
        unusable; the starts waiting for it fall back to plain starts, which report why.
        ``direct_first=False``: no start goes afresh while it starts (see `take_turn`; the
        pool's own first worker started afresh already).
        """
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
                interpreter.command("aiotp.workers.zygote", env),
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
        zygote = cls(adapter, parent, proc, timeout)
        zygote._direct_taken = not direct_first
        return zygote

    async def wait_ready(self) -> bool:
        """Wait until the template is ready to fork: True, or False when it never will be."""
        return await asyncio.shield(self._ready)

    async def take_turn(self) -> bool:
        """Whether a worker start should fork from this template (True) or start afresh.

        While the template is starting, the first start asking does not wait for it: it starts
        afresh, in parallel, so that a single worker is ready as soon as a plain start is. The
        others wait, since a fork from a ready template costs a millisecond and another
        interpreter tens of them. A template that failed or died sends everyone to plain starts.
        """
        if not self._ready.done() and not self._direct_taken:
            self._direct_taken = True
            return False
        return self.usable and await self.wait_ready()

    def _on_ready_readable(self) -> None:
        try:
            answer = self._ctrl.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            answer = b""
        if answer == b"R":
            self._stop_waiting(True)
            return
        if answer.startswith(b"F"):
            _log.debug("zygote for %s could not preload: %s", self.adapter, answer[1:].decode())
        self._not_ready("exited before it was ready" if not answer else "could not preload")

    def _not_ready(self, why: str) -> None:
        _log.debug("zygote for %s: %s", self.adapter, why)
        self._stop_waiting(False)
        self.usable = False
        with contextlib.suppress(Exception):
            self._proc.kill()  # reaped when its pidfd fires, or by aclose()

    def _stop_waiting(self, ready: bool) -> None:
        if self._ready.done():
            return
        asyncio.get_running_loop().remove_reader(self._ctrl.fileno())
        if self._ready_timer is not None:
            self._ready_timer.cancel()
            self._ready_timer = None
        self._ready.set_result(ready)

    async def fork(
        self, worker_id: str, threads: int, max_frame: int, sock: socket.socket, err_fd: int
    ) -> int:
        """Fork one worker serving on `sock` with stderr on `err_fd`; returns its pid.

        Safe to cancel: once the request is sent, the template forks whatever we do, and its
        answer would be read by the next fork as that fork's pid. So a cancelled fork still
        takes the answer (bounded) and kills the worker it names before re-raising.
        """
        if not await self.wait_ready():
            raise OSError(f"zygote for {self.adapter} failed to fork: it never became ready")
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
        self._stop_waiting(False)
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._proc.poll()

    def close(self) -> None:
        """Close the control socket: the zygote exits on EOF (its idle workers die with it)."""
        self.usable = False
        self._stop_waiting(False)  # before the socket closes: no reader outlives it
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
