"""Ray workers, actor side: the Ray actor that hosts one adapter (``profile="ray"``).

The caller's side is ray_worker.py; this class only ever runs inside a Ray worker process.
It is the Ray twin of host.py, the worker-process host, and keeps its promises:

- Only msgpack crosses: every method takes and returns the byte frames of protocol.py (a
  REQUEST frame in, a REPLY / ERROR / ITEM / END frame out), never a pickled value of the
  caller's or of a tool's. A result msgpack cannot carry becomes an ERROR naming it.
- A tool's failure, ``KeyboardInterrupt`` and ``SystemExit`` included, is sent back as data
  (type name, message, traceback text): nothing a tool raises can end the actor.
- Methods run in Ray concurrency groups, so that control messages are never stuck behind tools:

  ======== ================= =====================================================
  group    threads           methods
  ======== ================= =====================================================
  lane     threads_per_worker ``call``, ``stream``: the tools themselves
  control  2                  ``cancel``, ``credit``, ``drop``, ``drain``, ``teardown``
  ping     4                  ``ping`` (heartbeats overlap; each waits for the lane)
  watch    1                  ``watch``: never returns; fails when the actor dies
  default  1                  ``ready``: load the adapter, run ``setup()``
  ======== ================= =====================================================

- Heartbeats go through the lane: ``ping`` answers at once while a lane thread is free (or
  paused by a slow stream consumer); while a lane thread awaits an async tool, it answers once
  that thread's event loop runs a callback (the loop is alive: the tool is waiting, not stuck,
  as a process worker's loop would answer); otherwise only once a lane thread finishes a tool.
  A worker whose every lane thread is stuck (a sync tool sleeping forever, an async one
  blocking its loop, or holding the GIL, which also stops the ping thread) misses heartbeats
  and is replaced, as a process worker would be.
- Stopping drains the actor, not only the caller's handle: ``drain`` waits until no request
  runs here, those of other runtimes attached to this worker (ray_guests.py) included, so
  that they get the pool's shutdown grace too and ``teardown()`` never runs under them.
- A non-thread-safe adapter is never entered twice at once, whatever the lane's size.
- Streams are flow-controlled exactly like a process worker's (credit.py): at most ``WINDOW``
  items beyond those the caller took; ``credit`` gives more, ``cancel`` stops the generator
  (its ``finally`` runs) and ends the stream with END. A stream out of credit waits on its
  lane thread without counting as busy for heartbeats.
- ``cancel(rid)`` before a request starts makes it skip; during an async tool it cancels the
  tool's task; a running sync tool cannot be interrupted and finishes (the pool decides, after
  ``cancel_grace``, whether to wait for it or recycle this worker).
"""

from __future__ import annotations

import asyncio
import os
import threading
import traceback
from collections.abc import Generator, Iterator
from typing import Any

import ray

from aiotp.workers import protocol as p
from aiotp.workers.adapter import load_adapter
from aiotp.workers.credit import WINDOW, CreditGate
from aiotp.workers.invoke import Toolbox, describe_failure
from aiotp.workers.ray_lane import Lane

__all__ = ["CANCELLED_TYPE", "RayHost", "concurrency_groups"]

LANE, CONTROL, PING, WATCH = "lane", "control", "ping", "watch"
#: The ERROR type name of a request skipped because its caller left before it started.
CANCELLED_TYPE = "Cancelled"
#: Cancellations remembered for requests that have not arrived (or already ended): bounded.
_CANCEL_MEMORY = 4096


def concurrency_groups(threads: int) -> dict[str, int]:
    """The actor's concurrency groups for a lane of `threads` threads (set at actor creation:
    Ray does not accept them in ``.options()``)."""
    return {LANE: threads, CONTROL: 2, PING: 4, WATCH: 1}


class RayHost:
    """One worker: an adapter instance in a Ray actor (see the module docstring)."""

    def __init__(self, adapter: Any, worker_id: str, threads: int, max_frame: int) -> None:
        self._adapter = adapter
        self.worker_id = worker_id
        self.threads = threads
        self.max_frame = max_frame
        self.box: Toolbox | None = None
        self._serial: threading.Lock | None = None  # set for adapters that are not thread-safe
        self._lane = Lane(threads)  # what heartbeats and drain read (ray_lane.py)
        self._cancelled: dict[int, None] = {}  # insertion-ordered, bounded (_CANCEL_MEMORY)
        self._tasks: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = {}
        self._gates: dict[int, CreditGate] = {}
        self._loops = threading.local()
        self._forever = threading.Event()  # never set: `watch` waits on it until we die

    # -- default group -----------------------------------------------------------------------
    def ready(self) -> bytes:
        """Load the adapter and run its ``setup()``; READY (with what the caller needs to know)
        or FAILED, as a frame."""
        try:
            cls = load_adapter(self._adapter)
            box = Toolbox(cls)
            box.adapter.setup()
        except BaseException as exc:
            tb = traceback.format_exc()
            return p.pack([p.FAILED, 0, type(exc).__name__, str(exc), tb])
        self.box = box
        if not cls.thread_safe:
            self._serial = threading.Lock()
        return self._ready_frame(box)

    @ray.method(concurrency_group=CONTROL)
    def describe(self) -> bytes:
        """READY for a handle that attaches to this running worker from another runtime (an
        app instance routing a session pinned here), without running ``setup()`` again: the
        adapter and its sessions' state stay as they are. FAILED while setup has not run."""
        if self.box is None:
            return p.pack([p.FAILED, 0, "NotReady", "the worker has not finished setup", ""])
        return self._ready_frame(self.box)

    def _ready_frame(self, box: Toolbox) -> bytes:
        capacity = self.threads if type(box.adapter).thread_safe else 1
        node = ray.get_runtime_context().get_node_id()
        return p.pack([p.READY, 0, os.getpid(), box.names, capacity, sorted(box.idempotent), node])

    # -- lane ------------------------------------------------------------------------------
    @ray.method(concurrency_group=LANE)
    def call(self, data: bytes) -> bytes:
        """Run one request to its end: REPLY or ERROR."""
        frame = p.unpack_body(memoryview(data)[4:])
        rid = frame[1]
        if self._skip(rid):
            return _cancelled(rid)
        self._lane.enter()
        try:
            return self._run(frame)
        finally:
            self._cancelled.pop(rid, None)
            self._lane.leave()

    @ray.method(concurrency_group=LANE)
    def stream(self, data: bytes) -> Iterator[bytes]:
        """A Ray streaming generator (``num_returns="streaming"``): one ITEM frame per item,
        within the caller's credit, then END or ERROR, always last."""
        frame = p.unpack_body(memoryview(data)[4:])
        rid = frame[1]
        if self._skip(rid):
            yield _cancelled(rid)
            return
        gate = self._gates[rid] = CreditGate(WINDOW)
        self._lane.enter()
        try:
            yield from self._produce(frame, gate)
        finally:
            self._gates.pop(rid, None)
            self._cancelled.pop(rid, None)
            self._lane.leave()

    # -- ping ------------------------------------------------------------------------------
    @ray.method(concurrency_group=PING)
    def ping(self, timeout: float) -> bool:
        """True once the lane shows it is alive (see ray_lane.py); False after `timeout`."""
        return self._lane.alive(timeout)

    # -- control ---------------------------------------------------------------------------
    @ray.method(concurrency_group=CONTROL)
    def cancel(self, rid: int) -> None:
        """The caller left: skip `rid` if it has not started, cancel it if it is an async tool,
        stop it if it is a stream."""
        self._cancelled[rid] = None
        while len(self._cancelled) > _CANCEL_MEMORY:
            del self._cancelled[next(iter(self._cancelled))]
        running = self._tasks.get(rid)
        if running is not None:
            loop, task = running
            try:  # noqa: SIM105
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # its loop closed: the tool is over
                pass
        gate = self._gates.get(rid)
        if gate is not None:
            gate.grant(0)  # wake it: it re-checks for the cancellation

    @ray.method(concurrency_group=CONTROL)
    def credit(self, rid: int, n: int) -> None:
        gate = self._gates.get(rid)
        if gate is not None:  # credit for a stream that is over is dropped
            gate.grant(n)

    @ray.method(concurrency_group=CONTROL)
    def drop(self, session_id: str) -> None:
        """The session ended or moved to another worker: forget its state."""
        if self.box is not None:
            self.box.sessions.drop(session_id)

    @ray.method(concurrency_group=CONTROL)
    def drain(self, grace: float) -> int:
        """Wait until no request runs in this actor, at most `grace` s; how many still run.

        Why here and not in the caller's handle: the handle knows only its own requests, but
        other runtimes' requests (guests, ray_guests.py) run here too; the owner stopping its
        pool gives them the same grace, and runs ``teardown()`` only once they are over."""
        return self._lane.idle(grace)

    @ray.method(concurrency_group=CONTROL)
    def teardown(self) -> str:
        """The graceful end (the caller kills the actor right after): the adapter's
        ``teardown()``; what it raised, as text ("" when it did not)."""
        if self.box is None:
            return ""
        try:
            self.box.adapter.teardown()
        except BaseException as exc:
            return f"{type(exc).__name__}: {exc}"
        return ""

    # -- watch -----------------------------------------------------------------------------
    @ray.method(concurrency_group=WATCH)
    def watch(self) -> None:
        """Never returns: the caller holds this call open and learns of the actor's death (a
        kill, its process dying, its node lost) when Ray fails it."""
        self._forever.wait()

    # -- internals ---------------------------------------------------------------------------
    def _skip(self, rid: int) -> bool:
        return rid in self._cancelled

    def _encode(self, frame: list[Any]) -> bytes:
        try:
            return p.pack(frame, self.max_frame)
        except Exception as exc:  # a result msgpack cannot carry: tell the caller why
            return p.pack(
                [p.ERROR, frame[1], "tool_error", "SerializationError", f"result: {exc}", ""]
            )

    def _bound(self, frame: list[Any]) -> tuple[Any, str, dict[str, Any]]:
        assert self.box is not None
        fn, kind = self.box.lookup(frame[2])
        args = frame[3]
        if len(frame) > 5 or frame[2] in self.box.sessioned:
            args = self.box.bind(frame[2], args, frame[4:6] if len(frame) > 5 else None)
        return fn, kind, args

    def _run(self, frame: list[Any]) -> bytes:
        rid = frame[1]
        try:
            fn, kind, args = self._bound(frame)
            return self._encode([p.REPLY, rid, self._invoke(rid, fn, kind, args)])
        except BaseException as exc:  # a tool's KeyboardInterrupt and SystemExit too
            return p.pack(_error(rid, exc))

    def _invoke(self, rid: int, fn: Any, kind: str, args: dict[str, Any]) -> Any:
        """A tool's result; a generator called through execute gives its items as a list."""
        serial = self._serial
        if serial is not None:
            serial.acquire()
        try:
            if kind == "sync":
                return fn(**args)
            if kind == "async":
                return self._run_async(rid, fn(**args))
            return list(self._items(rid, fn, kind, args))
        finally:
            if serial is not None:
                serial.release()

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._loops, "loop", None)
        if loop is None:
            loop = self._loops.loop = asyncio.new_event_loop()
        return loop

    def _run_async(self, rid: int, coro: Any) -> Any:
        """An awaitable run to its end on this lane thread's own loop; `cancel` cancels it."""
        loop = self._loop()
        task = loop.create_task(coro)
        self._tasks[rid] = (loop, task)
        try:
            if rid in self._cancelled:  # cancelled between our check and the task's creation
                task.cancel()
            with self._lane.awaiting(loop):  # pings ask this loop meanwhile (ray_lane.py)
                return loop.run_until_complete(task)
        finally:
            self._tasks.pop(rid, None)

    def _items(
        self, rid: int, fn: Any, kind: str, args: dict[str, Any]
    ) -> Generator[Any, None, None]:
        """The items of a generator ("gen") or async generator ("agen") tool, until it ends or
        its request is cancelled; the generator is closed either way (its ``finally`` runs)."""
        gen = fn(**args)
        try:
            while rid not in self._cancelled:
                try:
                    item = next(gen) if kind == "gen" else self._run_async(rid, gen.__anext__())
                except (StopIteration, StopAsyncIteration):
                    return
                yield item
        finally:
            if kind == "gen":
                gen.close()
            else:
                self._run_async(rid, gen.aclose())

    def _produce(self, frame: list[Any], gate: CreditGate) -> Iterator[bytes]:
        rid = frame[1]
        last: list[Any] = [p.END, rid]
        try:
            fn, kind, args = self._bound(frame)
            if kind in ("sync", "async"):  # not a generator: its result is the only item
                yield self._encode([p.ITEM, rid, self._invoke(rid, fn, kind, args)])
            else:
                last = yield from self._generate(rid, fn, kind, args, gate)
        except GeneratorExit:
            raise  # Ray closed the stream: nobody reads any more
        except BaseException as exc:  # a tool's KeyboardInterrupt or SystemExit: the caller's
            last = _error(rid, exc)
        # END (or the error) is always the stream's last frame, sent after the generator closed.
        yield p.pack(last)

    def _generate(
        self, rid: int, fn: Any, kind: str, args: dict[str, Any], gate: CreditGate
    ) -> Generator[bytes, None, list[Any]]:
        """ITEM frames within the caller's credit; returns the stream's last frame."""
        serial = self._serial
        credit = 0
        items = self._items(rid, fn, kind, args)
        try:
            while rid not in self._cancelled:
                if credit <= 0:
                    self._lane.pause(True)  # waiting for a slow consumer is not being stuck
                    try:
                        credit = gate.take(lambda: rid in self._cancelled)
                    finally:
                        self._lane.pause(False)
                    continue
                if serial is not None:
                    serial.acquire()
                try:
                    item = next(items, _END)
                finally:
                    if serial is not None:
                        serial.release()
                if item is _END:
                    break
                try:
                    data = p.pack([p.ITEM, rid, item], self.max_frame)
                except Exception as exc:  # the generator is closed below, not left waiting
                    return [p.ERROR, rid, "tool_error", "SerializationError", f"item: {exc}", ""]
                yield data
                credit -= 1
        finally:
            if serial is not None:
                serial.acquire()
            try:
                items.close()
            finally:
                if serial is not None:
                    serial.release()
        return [p.END, rid]


def _error(rid: int, exc: BaseException) -> list[Any]:
    f = describe_failure(exc)
    return [p.ERROR, rid, f.kind, f.type_name, f.message, f.tb]


_END = object()


def _cancelled(rid: int) -> bytes:
    return p.pack([p.ERROR, rid, "cancelled", CANCELLED_TYPE, "the caller left", ""])
