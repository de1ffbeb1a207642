"""Starting a worker process: fork it from the pool's template or start it afresh, connect its
socket and stderr, and wait for READY.

A fresh start runs ``python -S -P`` on the runtime's sys.path (`aiotp.workers.interpreter`).
A pool's first worker starts afresh, and its template only once a second worker is asked for
(`Pool._usable_zygote`): a pool of one is ready as soon as a plain start is and runs no
template; the other workers wait for the template, since a fork is far cheaper than another
interpreter.

`start_process_worker` returns a ready `ProcessWorker` or raises `WorkerStartError` naming the
worker with the tail of its stderr. Safe to cancel: a cancelled start kills the process (and its
group) and re-raises `CancelledError`. No descriptor outlives a failed start. Kept apart from
the handle (process_worker.py), whose job is the life of a worker once it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from aiotp.workers import interpreter
from aiotp.workers import protocol as p
from aiotp.workers.adapter import adapter_path
from aiotp.workers.errors import WorkerStartError
from aiotp.workers.platform import check_process_profile
from aiotp.workers.process_worker import ProcessWorker, Protocol
from aiotp.workers.zygote_client import Zygote

__all__ = ["start_process_worker"]

STDERR_TAIL = 8192


class StderrTail(asyncio.Protocol):
    """Passes the worker's stderr through to ours, keeping the tail for error reports."""

    def __init__(self) -> None:
        self.tail = bytearray()
        self.eof: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.tail += data
        if len(self.tail) > STDERR_TAIL:
            del self.tail[: len(self.tail) - STDERR_TAIL]
        with contextlib.suppress(Exception):
            sys.stderr.write(data.decode(errors="replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.eof.done():
            self.eof.set_result(None)

    def text(self) -> str:
        return self.tail.decode(errors="replace")


async def start_process_worker(
    adapter: str | type,
    *,
    worker_id: str,
    threads_per_worker: int = 1,
    env: dict[str, str] | None = None,
    max_frame: int = p.DEFAULT_MAX_FRAME,
    start_timeout: float = 30.0,
    zygote: Zygote | None = None,
    title: str | None = None,
    **_options: Any,
) -> ProcessWorker:
    """Start one worker process and return its handle once it is ready; it takes `title` as
    its process title once ready (see proctitle.py).

    Safe to cancel: a cancelled start kills the process (and its group) and re-raises
    `CancelledError`; every other failure is a `WorkerStartError`. No descriptor outlives a
    failed start.
    """
    check_process_profile()
    try:
        path = adapter if isinstance(adapter, str) else adapter_path(adapter)
    except ValueError as exc:
        raise WorkerStartError(f"worker {worker_id}: {exc}", worker_id) from None
    worker = ProcessWorker(worker_id, max_frame)
    parent_sock, child_sock = socket.socketpair()
    err_r, err_w = os.pipe()
    owned: dict[str, Any] = {"sock": parent_sock, "err": err_r}  # closed unless handed on
    try:
        await _spawn(
            worker, path, child_sock, err_w, threads_per_worker, max_frame, env, zygote, title
        )
        await _connect(worker, owned)
        await asyncio.wait_for(asyncio.shield(worker.ready), start_timeout)
    except asyncio.CancelledError:
        worker.kill()
        _close_owned(owned)
        raise
    except BaseException as exc:
        worker.kill()
        _close_owned(owned)
        raise await _start_error(worker, path, exc) from None
    return worker


def _close_owned(owned: dict[str, Any]) -> None:
    sock = owned.pop("sock", None)
    if sock is not None:
        sock.close()
    err = owned.pop("err", None)
    if err is not None:
        with contextlib.suppress(OSError):
            os.close(err)


async def _spawn(
    worker: ProcessWorker,
    path: str,
    child_sock: socket.socket,
    err_w: int,
    threads_per_worker: int,
    max_frame: int,
    env: dict[str, str] | None,
    zygote: Zygote | None,
    title: str | None,
) -> None:
    """Fork (from the template) or start the process; the child's ends are closed here."""
    worker_id = worker.worker_id
    try:
        if zygote is not None and await zygote.take_turn():
            pid = await zygote.fork(
                worker_id, threads_per_worker, max_frame, child_sock, err_w, title
            )
            worker._zygote = zygote
        else:
            full_env = dict(os.environ)
            full_env.update(env or {})
            full_env.update(
                AIOTP_WORKER_FD=str(child_sock.fileno()),
                AIOTP_ADAPTER=path,
                AIOTP_THREADS=str(threads_per_worker),
                AIOTP_MAX_FRAME=str(max_frame),
                AIOTP_WORKER_ID=worker_id,
                AIOTP_PARENT_PID=str(os.getpid()),
            )
            if title:
                full_env["AIOTP_TITLE"] = title
            worker._popen = subprocess.Popen(
                interpreter.command("aiotp.workers.host", env),
                pass_fds=(child_sock.fileno(),),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stderr=err_w,
                start_new_session=True,
            )
            pid = worker._popen.pid
    finally:
        child_sock.close()
        os.close(err_w)
    worker.pid = pid
    try:
        worker._pidfd = os.pidfd_open(pid)
    except OSError as exc:
        # Without a pidfd we could never kill it safely later (pid reuse): kill it now, while
        # the pid is certainly still its own, and refuse the start.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        if worker._popen is not None:
            worker._popen.wait()
        raise WorkerStartError(f"worker {worker_id}: pidfd_open failed: {exc}", worker_id) from exc
    asyncio.get_running_loop().add_reader(worker._pidfd, worker._exited)


async def _connect(worker: ProcessWorker, owned: dict[str, Any]) -> None:
    """Hand the parent's ends (stderr pipe, socket) to the loop's transports."""
    loop = asyncio.get_running_loop()
    err_file = os.fdopen(owned.pop("err"), "rb", 0)
    _, worker._stderr = await loop.connect_read_pipe(StderrTail, err_file)
    sock = owned.pop("sock")
    transport, _ = await loop.connect_accepted_socket(lambda: Protocol(worker), sock=sock)
    worker._transport = transport


async def _start_error(worker: ProcessWorker, path: str, exc: BaseException) -> BaseException:
    """The error a failed start raises, with the tail of the worker's stderr."""
    tail = ""
    if worker._stderr is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker._stderr.eof), 1.0)
        tail = worker._stderr.text().strip()
    if isinstance(exc, WorkerStartError):
        exc.stderr = tail or exc.stderr
        return exc
    reason = "did not become ready in time" if isinstance(exc, TimeoutError) else str(exc)
    return WorkerStartError(
        f"worker {worker.worker_id} ({path}) failed to start: {reason}"
        + (f"\n--- stderr ---\n{tail[-2000:]}" if tail else ""),
        worker.worker_id,
        tail,
    )
