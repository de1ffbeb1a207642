"""The runtime's side of a zygote (see `aiotp.workers.zygote`): start it, ask it to fork.

One zygote per pool. Fork requests are serialised on its control socket (each takes about a
millisecond); the pool still starts workers in batches, so their ``setup()`` runs in parallel.
A zygote that failed to start or died is marked unusable and the pool falls back to plain starts.
`Zygote.start` returns while the template is still starting (see `take_turn`).

The template is the parent of the workers it forks, so only it learns how they ended: it
reports each one's exit code on a pipe, and `exit_code` hands it to the worker's handle (for the
one WARNING line a worker's death is worth: "killed by SIGKILL", "exited with code 3").
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
_EXIT = struct.Struct(">ii")  # zygote.py's exit report: pid, exit code
_KEPT_EXITS = 1024  # exit codes nobody asked for yet, at most (the oldest go first)


class Zygote:
    def __init__(
        self,
        adapter: str,
        ctrl: socket.socket,
        proc: subprocess.Popen[bytes],
        timeout: float,
        exits: int | None = None,
    ) -> None:
        self.adapter = adapter
        self._ctrl = ctrl
        self._proc = proc
        self._lock = asyncio.Lock()
        #: Not known to be dead: starting, or ready. False once it failed, died or was closed.
        self.usable = True
        self._direct_taken = False
        self._pidfd: int | None = None
        loop = self._loop = asyncio.get_running_loop()
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
        # Exit codes of our forks, by pid: reported ones nobody asked for yet, and the
        # futures of those asked for before their report came.
        self._exit_codes: dict[int, int] = {}
        self._exit_waiters: dict[int, asyncio.Future[int | None]] = {}
        self._exits = exits
        self._exits_buf = b""
        if exits is not None:
            os.set_blocking(exits, False)
            loop.add_reader(exits, self._on_exits_readable)

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
        title: str | None = None,
    ) -> Zygote | None:
        """A starting zygote for `adapter` (it is ready later: `wait_ready`), or None when its
        process cannot be started at all (the caller falls back to plain starts).

        It does not wait for the template to be ready, so that the pool can start its first
        worker afresh meanwhile (`take_turn`). A template that fails to preload (the adapter's
        module does not import, say) or is not ready within `timeout` is killed and marked
        unusable; the starts waiting for it fall back to plain starts, which report why.
        ``direct_first=False``: no start goes afresh while it starts (see `take_turn`; the
        pool's own first worker started afresh already). `title`: the template's process
        title (proctitle.py).
        """
        parent, child = socket.socketpair()
        exits_r, exits_w = os.pipe()
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.update(
            AIOTP_ZYGOTE_FD=str(child.fileno()),
            AIOTP_ZYGOTE_EXITS=str(exits_w),
            AIOTP_ADAPTER=adapter,
            AIOTP_PARENT_PID=str(os.getpid()),
        )
        if title:
            full_env["AIOTP_TITLE"] = title
        try:
            proc = subprocess.Popen(
                interpreter.command("aiotp.workers.zygote", env),
                pass_fds=(child.fileno(), exits_w),
                env=full_env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except (OSError, ValueError):
            parent.close()
            os.close(exits_r)
            return None
        finally:
            child.close()
            os.close(exits_w)
        zygote = cls(adapter, parent, proc, timeout, exits_r)
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
        self,
        worker_id: str,
        threads: int,
        max_frame: int,
        sock: socket.socket,
        err_fd: int,
        title: str | None = None,
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
                self._exchange(worker_id, threads, max_frame, sock, err_fd, title)
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
        self,
        worker_id: str,
        threads: int,
        max_frame: int,
        sock: socket.socket,
        err_fd: int,
        title: str | None,
    ) -> int:
        loop = asyncio.get_running_loop()
        request = msgpack.packb([worker_id, threads, max_frame, title])
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

    def exit_code(self, pid: int) -> asyncio.Future[int | None]:
        """How fork `pid` ended (`os.waitstatus_to_exitcode`: negative is a signal), once the
        template reports it; None if it never will (the template is gone)."""
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        if pid in self._exit_codes:
            fut.set_result(self._exit_codes.pop(pid))
        elif self._exits is None:
            fut.set_result(None)
        else:
            self._exit_waiters[pid] = fut
        return fut

    def _on_exits_readable(self) -> None:
        try:
            data = os.read(self._exits, 4096) if self._exits is not None else b""
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the template is gone: no report will come
            self._close_exits()
            return
        buf = self._exits_buf + data
        usable = len(buf) - len(buf) % _EXIT.size
        self._exits_buf = buf[usable:]
        for pid, code in _EXIT.iter_unpack(buf[:usable]):
            waiter = self._exit_waiters.pop(pid, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(code)
                continue
            self._exit_codes[pid] = code
            if len(self._exit_codes) > _KEPT_EXITS:
                del self._exit_codes[next(iter(self._exit_codes))]

    def _close_exits(self) -> None:
        """No more exit reports: close the pipe; whoever still waits learns "unknown"."""
        if self._exits is not None:
            self._loop.remove_reader(self._exits)  # close() may run outside of a coroutine
            os.close(self._exits)
            self._exits = None
        waiters, self._exit_waiters = self._exit_waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_result(None)

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
        self._close_exits()
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
