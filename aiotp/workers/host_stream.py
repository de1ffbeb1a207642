"""Streams, worker-process side: run a generator tool at most WINDOW items ahead of its caller.

The host sends an ITEM frame per item while it has credit (credit.py: it starts with WINDOW),
then waits for a CREDIT frame ``[11, id, n]`` from the caller. How it waits depends on its lane:

- inline (``threads == 1``): the thread running the stream is the one that reads the socket, so
  it reads the socket while it waits. CREDIT adds credit, CANCEL stops the stream, PING is
  answered at once (a paused stream is not a hung worker: the heartbeat must not kill it), and
  anything else (a pipelined request, STOP) waits in the backlog until the stream is over.
  Between items it polls the socket without blocking, at most once a millisecond, so that CANCEL
  and PING are seen while a generator runs, without a syscall per item of a fast one.
- threaded (``threads > 1``): the reading thread routes CREDIT frames to the stream's
  `CreditGate` (`Streams.credit`), on which the stream's thread waits; a CANCEL reaches it
  within 50 ms (the gate re-checks), and PINGs are answered by the other threads of the lane.

Whatever the tool raises, KeyboardInterrupt and SystemExit included, is sent as an ERROR frame
(the caller gets `ToolError`) after the generator was closed: a tool cannot end its worker. An item
msgpack cannot carry ends the stream with a SerializationError: the generator is closed rather
than left waiting for credit that would never come. END (or that ERROR) is always the last frame
of a stream, sent after the generator's ``finally`` ran.
"""

from __future__ import annotations

import _socket
import _thread
import os
import time

from aiotp.workers import protocol as p
from aiotp.workers.credit import WINDOW, CreditGate
from aiotp.workers.errors import SerializationError
from aiotp.workers.invoke import describe_failure

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in a worker process
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from aiotp.workers.host import _Host

__all__ = ["Streams", "run_stream"]

POLL_EVERY = 0.001  # seconds between two non-blocking reads of the socket by an inline stream


class Streams:
    """The credit gates of the streams running on a threaded lane, by request id."""

    __slots__ = ("_gates", "_lock", "waiting")

    def __init__(self) -> None:
        self._gates: dict[int, CreditGate] = {}
        self._lock = _thread.allocate_lock()
        # Lane threads blocked waiting for credit: they are paused by a slow consumer, not
        # stuck in a tool, so when all of them wait the reading thread answers pings itself.
        self.waiting = 0

    def wait_for_credit(self, gate: CreditGate, stop: Callable[[], bool]) -> int:
        with self._lock:
            self.waiting += 1
        try:
            return gate.take(stop)
        finally:
            with self._lock:
                self.waiting -= 1

    def open(self, rid: int) -> CreditGate:
        gate = self._gates[rid] = CreditGate()
        return gate

    def close(self, rid: int) -> None:
        self._gates.pop(rid, None)

    def credit(self, rid: int, n: int) -> None:
        """A CREDIT frame, on the reading thread. Credit for a stream that is over (it crossed
        our END on the wire) is dropped."""
        gate = self._gates.get(rid)
        if gate is not None:
            gate.grant(n)


def run_stream(host: _Host, rid: int, fn: Any, kind: str, args: dict[str, Any]) -> None:
    """Run one generator ("gen") or async generator ("agen") tool to its END frame."""
    inline = host.pool is None
    gate = None if inline else host.streams.open(rid)
    cancelled = host.cancelled
    credit = WINDOW
    next_poll = time.monotonic() + POLL_EVERY
    last: list[Any] = [p.END, rid]
    gen: Any = None
    loop = host._loop() if kind == "agen" else None
    try:
        gen = fn(**args)
        step = gen.__next__ if loop is None else lambda: loop.run_until_complete(gen.__anext__())
        while rid not in cancelled:
            if credit <= 0:
                if gate is None:
                    credit = _wait_inline(host, rid)
                else:
                    credit = host.streams.wait_for_credit(gate, lambda: rid in cancelled)
                continue
            if inline and time.monotonic() >= next_poll:
                credit += _read_control(host, rid, block=False)
                next_poll = time.monotonic() + POLL_EVERY
            try:
                item = step()
            except (StopIteration, StopAsyncIteration):
                break
            try:
                data = p.pack([p.ITEM, rid, item], host.max_frame)
            except SerializationError as exc:
                last = [p.ERROR, rid, "tool_error", "SerializationError", f"item: {exc}", ""]
                break
            host.send(data)
            credit -= 1
    except BaseException as exc:  # a tool's KeyboardInterrupt or SystemExit: the caller's
        f = describe_failure(exc)
        last = [p.ERROR, rid, f.kind, f.type_name, f.message, f.tb]
    finally:
        if gen is not None:
            try:
                if loop is not None:
                    loop.run_until_complete(gen.aclose())
                else:
                    gen.close()
            except BaseException:  # its finally failing is nobody's news
                pass
        cancelled.discard(rid)
        if gate is not None:
            host.streams.close(rid)
    host.send(p.pack(last))


def _wait_inline(host: _Host, rid: int) -> int:
    """Read the socket until credit for `rid` comes (or a CANCEL of it)."""
    credit = 0
    while credit <= 0 and rid not in host.cancelled:
        credit += _read_control(host, rid, block=True)
    return credit


def _read_control(host: _Host, rid: int, block: bool) -> int:
    """One read of the socket by an inline stream: the credit it brought for `rid`."""
    try:
        data = host.sock.recv(1 << 16, 0 if block else _socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError:
        data = b""
    if not data:
        os._exit(0)  # EOF: the parent is gone; nobody to stream to
    credit = 0
    for frame in host.reader.feed(data):
        kind = frame[0]
        if kind == p.CREDIT:
            if frame[1] == rid:
                credit += frame[2]
        elif kind == p.CANCEL:
            host.cancelled.add(frame[1])
        elif kind == p.PING:
            host.send(p.pack([p.PONG, frame[1]]))
        else:
            host.backlog.append(frame)
    return credit
