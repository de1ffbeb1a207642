"""Process workers, parent side: a handle per child process, speaking the frame protocol.

`start_process_worker` returns once the child sent READY (after the adapter's ``setup()``), or
raises `WorkerStartError` naming the worker with the tail of its stderr. The handle then offers
``request`` / ``stream`` / ``ping`` / ``stop`` / ``kill`` (the same interface as thread workers).

Guarantees:
- When the child dies (exit, SIGKILL, EOF) every request it held fails at once with
  `WorkerCrashed`; nobody waits for a timeout to learn it. Death is seen both as EOF on the
  socket and through a pidfd, which also guards kills against pid reuse.
- A malformed or oversized frame from the child kills that child and fails only its requests.
- A request that times out fails with `CallTimeout`; its late reply is dropped.
- `stop(grace)`: STOP frame, wait ``grace`` for the child to finish and exit, SIGTERM to its
  process group, one more second, then SIGKILL. `kill()`: SIGKILL to the group at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Any

from aiotp.runtime.errors import CallTimeout
from aiotp.workers import protocol as p
from aiotp.workers.adapter import adapter_path
from aiotp.workers.credit import CREDIT_BATCH
from aiotp.workers.errors import (
    ProtocolError,
    ToolError,
    UnknownTool,
    WorkerCrashed,
    WorkerStartError,
)
from aiotp.workers.platform import check_process_profile
from aiotp.workers.streaming import Stream
from aiotp.workers.ticket import Ticket
from aiotp.workers.zygote_client import Zygote

__all__ = ["ProcessWorker", "start_process_worker"]

_log = logging.getLogger("aiotp.workers")
STDERR_TAIL = 8192


class _Protocol(asyncio.Protocol):
    def __init__(self, worker: ProcessWorker) -> None:
        self.worker = worker

    def data_received(self, data: bytes) -> None:
        w = self.worker
        try:
            frames = w.reader.feed(data)
        except ProtocolError as exc:
            w.broken(exc)
            return
        for frame in frames:
            w.on_frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.gone("its connection closed")


class _StderrTail(asyncio.Protocol):
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


class ProcessWorker:
    """Handle to one worker process (see the module docstring)."""

    def __init__(self, worker_id: str, max_frame: int) -> None:
        self.worker_id = worker_id
        self.pid: int | None = None
        self.capacity = 1
        self.in_flight = 0
        self.requests = 0
        self.errors = 0
        self.tools: list[str] = []
        self.reader = p.FrameReader(max_frame)
        self.max_frame = max_frame
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[Any] = self._loop.create_future()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        # Requests whose caller left (timeout, cancellation) while the worker still runs them:
        # their ticket ends when the worker's answer arrives or the worker dies.
        self._orphans: dict[int, Ticket] = {}
        self._collected: dict[int, list[Any]] = {}  # items of generator tools run by execute
        self._streams: dict[int, Stream] = {}
        self._transport: asyncio.Transport | None = None
        self._stderr: _StderrTail | None = None
        self._pidfd: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        # Writes made in one loop iteration go out as one (see _send).
        self._out: list[bytes] | None = None
        # Coarse timeouts: requests whose deadlines fall in the same 10 ms share one timer.
        self._buckets: dict[int, list[tuple[int, str, float]]] = {}

    def __repr__(self) -> str:
        return f"<ProcessWorker {self.worker_id} pid={self.pid} in_flight={self.in_flight}>"

    # -- incoming ---------------------------------------------------------------------------
    def on_frame(self, frame: list[Any]) -> None:
        kind, rid = frame[0], frame[1]
        if kind in (p.REPLY, p.PONG):
            fut = self._pending.pop(rid, None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(frame[2] if kind == p.REPLY else None)
            elif kind == p.REPLY and rid in self._streams:
                # A tool that is not a generator, streamed: its result is the only item.
                self._streams[rid].push(p.ITEM, frame[2])
                self._streams[rid].push(p.END)
            elif self._orphans:
                self._end_orphan(rid)
        elif kind == p.ERROR:
            if self._orphans and self._end_orphan(rid):
                return
            exc = self._error(frame)
            fut = self._pending.pop(rid, None)
            if fut is not None:
                if not fut.done():
                    fut.set_exception(exc)
            elif rid in self._streams:
                self._streams[rid].push(p.ERROR, exc)
        elif kind in (p.ITEM, p.END):
            stream = self._streams.get(rid)
            if stream is not None:
                stream.push(kind, frame[2] if kind == p.ITEM else None)
            elif rid in self._pending:
                self._collect(rid, kind, frame)
            elif kind == p.END and self._orphans:
                self._end_orphan(rid)
        elif kind == p.READY:
            self.pid = frame[2]
            self.tools = list(frame[3])
            self.capacity = int(frame[4])
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == p.FAILED:
            if not self.ready.done():
                self.ready.set_exception(
                    WorkerStartError(
                        f"worker {self.worker_id} failed in setup: {frame[2]}: {frame[3]}",
                        self.worker_id,
                        frame[4],
                    )
                )
        else:
            self.broken(ProtocolError(f"unexpected frame kind {kind!r} from {self.worker_id}"))

    def _error(self, frame: list[Any]) -> Exception:
        _, _, kind, type_name, message, tb = frame[:6]
        if kind == "unknown_tool":
            return UnknownTool(message.split("'")[1] if "'" in message else message, self.tools)
        return ToolError(type_name, message, tb)

    def _collect(self, rid: int, kind: int, frame: list[Any]) -> None:
        """A generator tool called through `execute`: its items become one list (credit is
        returned as they arrive, so the worker is never paused by a caller that waits for
        the whole)."""
        if kind == p.END:
            fut = self._pending.pop(rid)
            items = self._collected.pop(rid, [])
            if not fut.done():
                fut.set_result(items)
            return
        items = self._collected.setdefault(rid, [])
        items.append(frame[2])
        if len(items) % CREDIT_BATCH == 0:
            with contextlib.suppress(Exception):
                self._send([p.CREDIT, rid, CREDIT_BATCH])

    def _end_orphan(self, rid: int) -> bool:
        ticket = self._orphans.pop(rid, None)
        if ticket is None:
            return False
        ticket.end()
        return True

    @property
    def busy(self) -> int:
        """Requests the worker is really running, including those whose caller left."""
        return self.in_flight + len(self._orphans)

    def broken(self, exc: ProtocolError) -> None:
        _log.warning("worker %s broke the protocol (%s): killing it", self.worker_id, exc)
        self.kill()
        self.gone(f"protocol error: {exc}")

    def gone(self, reason: str) -> None:
        """The worker is unusable: fail everything it held, at once."""
        if self.closed.done():
            return
        crash = WorkerCrashed(f"worker {self.worker_id} died: {reason}", self.worker_id, reason)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(crash)
        self._pending.clear()
        orphans, self._orphans = self._orphans, {}
        for ticket in orphans.values():
            ticket.end()
        for stream in self._streams.values():
            stream.push(p.ERROR, crash)
        if not self.ready.done():
            self.ready.set_exception(crash)
            self.ready.exception()  # a start that was given up on does not read it: no warning
        if self._transport is not None:
            self._transport.abort()
        self.closed.set_result(reason)

    def _exited(self) -> None:
        """The pidfd became readable: the process is gone (reap it if it is ours).

        Whatever ended it (STOP, a crash, a SIGKILL from outside), the processes its tools
        started die with it: its process group is killed before it is reaped. While any
        member of the group lives, the group id cannot be reused by another process.
        """
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._popen is not None:
            self._popen.poll()
        self.gone("the process exited")

    # -- outgoing ---------------------------------------------------------------------------
    def _send(self, frame: list[Any]) -> None:
        data = p.pack(frame, self.max_frame)  # SerializationError before anything is written
        if self.closed.done() or self._transport is None:
            raise WorkerCrashed(f"worker {self.worker_id} is gone", self.worker_id)
        # The first frame of a loop iteration is written at once (no added latency for a lone
        # request); frames that follow in the same iteration are joined into one write at its
        # end: 64 pipelined requests cost one syscall, not 64.
        if self._out is not None:
            self._out.append(data)
        elif not self._pending:
            self._transport.write(data)  # a lone request: nothing to coalesce with
        else:
            self._transport.write(data)
            self._out = []
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and self._transport is not None and not self.closed.done():
            self._transport.write(b"".join(out))

    def _arm_timeout(self, rid: int, timeout: float, what: str) -> None:
        deadline = self._loop.time() + timeout
        slot = int(deadline * 100) + 1  # never early: rounded up to the next 10 ms
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = []
            self._loop.call_at(slot / 100, self._expire_bucket, slot)
        bucket.append((rid, what, timeout))

    def _expire_bucket(self, slot: int) -> None:
        for rid, what, timeout in self._buckets.pop(slot, ()):
            # Left in _pending: `request` sees the worker has not answered and orphans it.
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_exception(
                    CallTimeout(
                        f"{what} on worker {self.worker_id} got no answer within {timeout} s"
                    )
                )

    async def _wait(
        self, fut: asyncio.Future[Any], rid: int, timeout: float | None, what: str
    ) -> Any:
        if timeout is not None:
            self._arm_timeout(rid, timeout, what)
        try:
            return await fut
        finally:
            self._pending.pop(rid, None)

    async def request(
        self, tool: str, args: dict[str, Any], timeout: float | None, ticket: Ticket | None = None
    ) -> Any:
        """Run a tool. ``ticket`` (if given) ends when the worker has really finished with the
        request: a caller that times out or is cancelled leaves it running, and the worker is
        sent a CANCEL frame (a request not started yet is skipped, an async tool cancelled)."""
        rid = next(self._ids)
        try:
            self._send([p.REQUEST, rid, tool, args])
        except BaseException:
            if ticket is not None:
                ticket.end()  # nothing reached the worker
            raise
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = fut
        if timeout is not None:
            self._arm_timeout(rid, timeout, tool)  # the message is formatted only on expiry
        self.in_flight += 1
        self.requests += 1
        try:
            return await fut
        except BaseException:
            self.errors += 1
            if self._pending.pop(rid, None) is not None and not self.closed.done():
                # No answer yet: the worker still holds the request.
                if ticket is not None:
                    self._orphans[rid] = ticket
                    ticket = None
                with contextlib.suppress(Exception):
                    self._send([p.CANCEL, rid])
            raise
        finally:
            self.in_flight -= 1
            if self._collected:
                self._collected.pop(rid, None)
            if ticket is not None:
                ticket.end()

    def stream(self, tool: str, args: dict[str, Any], timeout: float | None) -> Stream:
        """Items of a generator tool, at most a window ahead of the caller (see streaming.py):
        credit goes back in CREDIT frames, leaving early sends CANCEL."""
        rid = next(self._ids)
        self._send([p.REQUEST, rid, tool, args])

        def grant(n: int) -> None:
            if not self.closed.done():
                self._send([p.CREDIT, rid, n])

        def finish(completed: bool) -> None:
            self.in_flight -= 1
            del self._streams[rid]
            if not completed and not self.closed.done():
                with contextlib.suppress(Exception):
                    self._send([p.CANCEL, rid])

        stream = Stream(self._loop, f"stream {tool} on {self.worker_id}", timeout, grant, finish)
        self._streams[rid] = stream
        self.in_flight += 1
        return stream

    async def ping(self, timeout: float) -> float:
        rid = next(self._ids)
        started = self._loop.time()
        self._send([p.PING, rid])
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = fut
        await self._wait(fut, rid, timeout, "ping")
        return self._loop.time() - started

    # -- ending -----------------------------------------------------------------------------
    def _signal_group(self, sig: int) -> None:
        if self.pid is None or self._pidfd is None:
            return  # already gone (and reaped): its pid may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace: float) -> None:
        if self.closed.done():
            return
        with contextlib.suppress(Exception):
            self._send([p.STOP, 0])
        for sig, wait in ((None, grace), (signal.SIGTERM, 1.0)):
            if sig is not None:
                self._signal_group(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._process_gone()), wait)
                return
        self.kill()

    async def _process_gone(self) -> None:
        await asyncio.shield(self.closed)
        while self._pidfd is not None:  # EOF came first; the exit follows
            await asyncio.sleep(0.005)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        self.gone("killed")

    def statistics(self) -> dict[str, int]:
        return {"requests": self.requests, "errors": self.errors, "in_flight": self.in_flight}


async def start_process_worker(
    adapter: str | type,
    *,
    worker_id: str,
    threads_per_worker: int = 1,
    env: dict[str, str] | None = None,
    max_frame: int = p.DEFAULT_MAX_FRAME,
    start_timeout: float = 30.0,
    zygote: Zygote | None = None,
    **_options: Any,
) -> ProcessWorker:
    """Start one worker process and return its handle once it is ready.

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
        await _spawn(worker, path, child_sock, err_w, threads_per_worker, max_frame, env, zygote)
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
) -> None:
    """Fork (from the template) or start the process; the child's ends are closed here."""
    worker_id = worker.worker_id
    try:
        if zygote is not None and zygote.usable:
            pid = await zygote.fork(worker_id, threads_per_worker, max_frame, child_sock, err_w)
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
            worker._popen = subprocess.Popen(
                [sys.executable, "-m", "aiotp.workers.host"],
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
    _, worker._stderr = await loop.connect_read_pipe(_StderrTail, err_file)
    sock = owned.pop("sock")
    transport, _ = await loop.connect_accepted_socket(lambda: _Protocol(worker), sock=sock)
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
