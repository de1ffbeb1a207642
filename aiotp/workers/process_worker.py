"""Process workers, parent side: a handle per child process, speaking the frame protocol.

`process_start.start_process_worker` starts the child and returns this handle once it is
ready. The handle offers ``request`` / ``stream`` / ``ping`` / ``stop`` / ``kill`` (the same
interface as thread workers).

Guarantees:
- When the child dies (exit, SIGKILL, EOF) every request it held fails at once with
  `WorkerCrashed`; nobody waits for a timeout to learn it. Death is seen both as EOF on the
  socket and through a pidfd, which also guards kills against pid reuse.
- A malformed or oversized frame from the child kills that child and fails only its requests.
- A request whose caller times out or is cancelled fails for that caller at once
  (`CallTimeout`); the worker is sent CANCEL and the request's ticket stays open until the
  worker's late answer arrives (the pool keeps the slot busy until then); that answer is
  dropped.
- Whenever the process ends, its process group (the processes its tools started) is killed.
- `stop(grace)`: STOP frame, wait ``grace`` for the child to finish and exit, SIGTERM to its
  process group, one more second, then SIGKILL. `kill()`: SIGKILL to the group at once.
- `exit_code` says how the process ended (for the log line its death is worth): from its
  ``Popen`` when we started it, from the template when it was forked (see zygote_client.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import subprocess
from typing import Any

from aiotp.runtime.errors import CallTimeout
from aiotp.workers import protocol as p
from aiotp.workers.credit import CREDIT_BATCH
from aiotp.workers.errors import (
    ProtocolError,
    ToolError,
    UnknownTool,
    WorkerCrashed,
    WorkerStartError,
)
from aiotp.workers.streaming import Stream
from aiotp.workers.ticket import Ticket

__all__ = ["ProcessWorker", "Protocol"]

_log = logging.getLogger("aiotp.workers")
STDERR_TAIL = 8192


class Protocol(asyncio.Protocol):
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
        self.idempotent: frozenset[str] = frozenset()
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
        self._streams_over: set[int] = set()  # streams whose last frame came in, still open
        self._streams: dict[int, Stream] = {}
        self._transport: asyncio.Transport | None = None
        self._stderr: Any = None  # process_start.StderrTail: its output, for error reports
        self._pidfd: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._zygote: Any = None  # zygote_client.Zygote that forked it: it learns the exit code
        self._exit_code: asyncio.Future[int | None] = self._loop.create_future()
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
                self._streams_over.add(rid)
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
                self._streams_over.add(rid)
        elif kind in (p.ITEM, p.END):
            stream = self._streams.get(rid)
            if stream is not None:
                stream.push(kind, frame[2] if kind == p.ITEM else None)
                if kind == p.END:
                    self._streams_over.add(rid)
            elif rid in self._pending:
                self._collect(rid, kind, frame)
            elif kind == p.END and self._orphans:
                self._end_orphan(rid)
        elif kind == p.READY:
            self.pid = frame[2]
            self.tools = list(frame[3])
            self.capacity = int(frame[4])
            self.idempotent = frozenset(frame[5]) if len(frame) > 5 else frozenset()
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
        # DEBUG: its pool's WARNING line about the death says it (worker_log.py), once.
        _log.debug("worker %s broke the protocol (%s): killing it", self.worker_id, exc)
        self.gone(f"protocol error: {exc}")  # first, so that this is the reason it died of
        self.kill()

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
            self._exit_code.set_result(self._popen.returncode)
        elif self._zygote is not None and self.pid is not None:
            self._zygote.exit_code(self.pid).add_done_callback(self._forked_exit)
        else:
            self._exit_code.set_result(None)
        self.gone("the process exited")

    def _forked_exit(self, fut: asyncio.Future[int | None]) -> None:
        if not self._exit_code.done():
            self._exit_code.set_result(None if fut.cancelled() else fut.result())

    async def exit_code(self, timeout: float) -> int | None:
        """How the process ended, as `subprocess.Popen.returncode` (negative: killed by that
        signal); None when it is unknown within `timeout` (or it has not ended)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._exit_code), timeout)
        except TimeoutError:
            return None

    def stderr_tail(self) -> str:
        """The last lines the process wrote to stderr (a traceback, if it died of one)."""
        return self._stderr.text() if self._stderr is not None else ""

    # -- outgoing ---------------------------------------------------------------------------
    def _send(self, frame: list[Any]) -> None:
        data = p.pack(frame, self.max_frame)  # SerializationError before anything is written
        if self.closed.done() or self._transport is None:
            raise WorkerCrashed(f"worker {self.worker_id} is gone", self.worker_id, delivered=False)
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
        self,
        tool: str,
        args: dict[str, Any],
        timeout: float | None,
        ticket: Ticket | None = None,
        session: list[Any] | None = None,
    ) -> Any:
        """Run a tool. ``ticket`` (if given) ends when the worker has really finished with the
        request: a caller that times out or is cancelled leaves it running, and the worker is
        sent a CANCEL frame (a request not started yet is skipped, an async tool cancelled)."""
        rid = next(self._ids)
        try:
            self._send(p.request_frame(rid, tool, args, session))
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

    def stream(
        self,
        tool: str,
        args: dict[str, Any],
        timeout: float | None,
        ticket: Ticket | None = None,
        session: list[Any] | None = None,
    ) -> Stream:
        """Items of a generator tool, at most a window ahead of the caller (see streaming.py):
        credit goes back in CREDIT frames, leaving early sends CANCEL. ``ticket`` ends once the
        worker has really finished the stream: at its END or error, or, when the caller left
        early, at the END the worker sends after CANCEL."""
        rid = next(self._ids)
        try:
            self._send(p.request_frame(rid, tool, args, session))
        except BaseException:
            if ticket is not None:
                ticket.end()
            raise

        def grant(n: int) -> None:
            if not self.closed.done():
                self._send([p.CREDIT, rid, n])

        def finish(completed: bool) -> None:
            self.in_flight -= 1
            del self._streams[rid]
            over = rid in self._streams_over  # its END or error is in, unread or not
            self._streams_over.discard(rid)
            if not completed and not over and not self.closed.done():
                if ticket is not None:
                    self._orphans[rid] = ticket  # until the worker's END after our CANCEL
                with contextlib.suppress(Exception):
                    self._send([p.CANCEL, rid])
            elif ticket is not None:
                ticket.end()

        stream = Stream(self._loop, f"stream {tool} on {self.worker_id}", timeout, grant, finish)
        self._streams[rid] = stream
        self.in_flight += 1
        return stream

    def drop_session(self, session_id: str) -> None:
        """The session ended or moved to another worker: the worker forgets its state."""
        if not self.closed.done():
            with contextlib.suppress(Exception):
                self._send([p.DROP, 0, session_id])

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
        """STOP, then SIGTERM after `grace`, then SIGKILL after one more second. Safe to
        cancel: the process is then killed rather than left half-stopped."""
        if self.closed.done():
            return
        with contextlib.suppress(Exception):
            self._send([p.STOP, 0])
        gone = asyncio.ensure_future(self._process_gone())
        try:
            for sig, wait in ((None, grace), (signal.SIGTERM, 1.0)):
                if sig is not None:
                    self._signal_group(sig)
                done, _ = await asyncio.wait({gone}, timeout=wait)
                if done:
                    return
            self.kill()
        except asyncio.CancelledError:
            self.kill()
            raise
        finally:
            gone.cancel()  # a watcher left behind would be destroyed pending with the loop

    async def _process_gone(self) -> None:
        await asyncio.shield(self.closed)
        while self._pidfd is not None:  # EOF came first; the exit follows
            await asyncio.sleep(0.005)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)
        self.gone("killed")

    def statistics(self) -> dict[str, int]:
        return {"requests": self.requests, "errors": self.errors, "in_flight": self.in_flight}

