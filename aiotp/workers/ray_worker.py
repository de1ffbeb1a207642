"""Ray workers, caller's side: a handle per Ray actor, with the interface of the other profiles.

`start_ray_worker` (ray_start.py) creates the actor (ray_host.py) and returns this handle once
the adapter's ``setup()`` ran. The handle offers ``request`` / ``stream`` / ``ping`` / ``stop`` /
``kill`` / ``drop_session``, the interface the pool, the heartbeat monitor and the worker actor
use for thread and process workers, with the same guarantees:

- Arguments are packed as msgpack frames before anything is sent (`SerializationError`, and
  nothing reaches Ray, for what msgpack cannot carry or what exceeds ``max_frame``); results
  come back the same way. Ray carries bytes only.
- When the actor dies (killed, its process crashed, its node lost) every request it held fails
  at once with `WorkerCrashed`, and ``closed`` resolves: the handle keeps one call open on the
  actor (``watch``) that only ends when Ray reports the actor dead, so a death is seen even
  when no request is in flight. Any `ray.exceptions.RayActorError` counts as death: aiotp owns
  restarts (the actor is created with ``max_restarts=0``, ``max_task_retries=0``).
- A caller that times out or is cancelled gets its answer at once (`CallTimeout`, or the
  cancellation); the actor is told to skip or cancel the request (``cancel``), and the request's
  ticket ends only when the actor's answer arrives, so the pool keeps the slot busy until then.
- `stop(grace)`: in-flight requests get ``grace`` seconds, this handle's and then those the
  actor runs for other runtimes (``drain``), then the adapter's ``teardown()`` (only once no
  request runs), then ``ray.kill``; it returns once Ray reports the actor dead (or after a few
  seconds more).
  `kill()`: ``ray.kill`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from concurrent.futures import Future as ConcurrentFuture
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError

from aiotp.runtime.errors import CallTimeout
from aiotp.workers import protocol as p
from aiotp.workers.errors import (
    ToolError,
    UnknownTool,
    WorkerCrashed,
    WorkerStartError,
)
from aiotp.workers.ray_calls import expire, retrieve, short, wait, when_done
from aiotp.workers.streaming import Stream
from aiotp.workers.ticket import Ticket

__all__ = ["RayWorker"]

_log = logging.getLogger("aiotp.workers")
#: How long `stop` waits for Ray to report a killed actor dead before returning anyway.
DEATH_WAIT = 5.0
#: How much longer than its grace `stop` waits for the actor's ``drain`` to answer.
DRAIN_SLACK = 5.0


class RayWorker:
    """Handle to one worker actor (see the module docstring)."""

    def __init__(
        self, actor: Any, worker_id: str, max_frame: int, *, owned: bool = True, first_id: int = 1
    ) -> None:
        self.actor = actor
        # A handle of another runtime's worker (`owned=False`, see ray_guests.py) never kills
        # it, and numbers its requests from `first_id` so that its cancels cannot name the
        # owner's requests.
        self.owned = owned
        self.worker_id = worker_id
        self.max_frame = max_frame
        self.pid: int | None = None  # the actor's process, on its node
        self.node_id: str | None = None  # the Ray node it runs on
        self.capacity = 1
        self.in_flight = 0
        self.requests = 0
        self.errors = 0
        self.tools: list[str] = []
        self.idempotent: frozenset[str] = frozenset()
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[Any] = self._loop.create_future()
        self._ids = itertools.count(first_id)
        # rid -> (the caller's future, the request's ticket, the Ray ref kept alive until done)
        self._pending: dict[int, tuple[asyncio.Future[Any], Ticket | None, Any]] = {}
        self._streams: dict[int, Stream] = {}
        self._pumps: set[asyncio.Task[None]] = set()
        self._killed = False
        # The methods, looked up once: each lookup builds an ActorMethod.
        self._call = actor.call
        self._stream = actor.stream.options(num_returns="streaming")
        self._watch: Any = None

    def __repr__(self) -> str:
        where = f" node={self.node_id[:8]}" if self.node_id else ""
        return f"<RayWorker {self.worker_id} pid={self.pid}{where} in_flight={self.in_flight}>"

    # -- start -----------------------------------------------------------------------------
    async def start(self, attach: bool = False) -> None:
        """Run the adapter's ``setup()`` in the actor and learn its tools; `WorkerStartError`
        when it fails. The watch call goes out first, so that a death during setup is seen.
        With `attach`, learn them from a worker already set up (by another runtime)."""
        self._watch = self.actor.watch.remote()
        when_done(self._watch, self._watch_ended, self._loop)
        method = self.actor.describe if attach else self.actor.ready
        try:
            data = await wait(method.remote(), self._loop)
        except RayError as exc:
            raise WorkerStartError(
                f"worker {self.worker_id}: its Ray actor died before it was ready: {exc}",
                self.worker_id,
            ) from None
        frame = p.unpack_body(memoryview(data)[4:])
        if frame[0] == p.FAILED:
            raise WorkerStartError(
                f"worker {self.worker_id} failed in setup: {frame[2]}: {frame[3]}",
                self.worker_id,
                frame[4],
            )
        _, _, self.pid, tools, capacity, idempotent, self.node_id = frame
        self.tools = list(tools)
        self.capacity = int(capacity)
        self.idempotent = frozenset(idempotent)

    # -- answers (on the loop) ---------------------------------------------------------------
    def _watch_ended(self, cf: ConcurrentFuture[Any]) -> None:
        exc = cf.exception()
        reason = "stopped" if self._killed else f"its Ray actor died: {short(exc)}"
        self.gone(reason)

    def _answered(self, rid: int, cf: ConcurrentFuture[Any]) -> None:
        entry = self._pending.pop(rid, None)
        if entry is None:
            return  # the worker was declared gone already: its callers know
        waiter, ticket, _ref = entry
        try:
            outcome: Any = self._decode(cf.result())
        except RayActorError as exc:
            outcome = self._crash(f"its Ray actor died: {short(exc)}")
            self.gone(f"its Ray actor died: {short(exc)}")
        except RayTaskError as exc:  # the host itself failed (a bug): the tool's caller's error
            cause = getattr(exc, "cause", None) or exc
            outcome = ToolError(type(cause).__name__, str(cause))
        except RayError as exc:  # its result was lost (its node died after it ran)
            outcome = self._crash(f"its result was lost: {short(exc)}")
        except Exception as exc:  # a garbled answer: this caller's error
            outcome = ToolError(type(exc).__name__, str(exc))
        if ticket is not None:
            ticket.end()
        if not waiter.done():
            if isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome[0])

    def _decode(self, data: bytes) -> Any:
        """[result] for a REPLY; the exception an ERROR stands for."""
        frame = p.unpack_body(memoryview(data)[4:])
        if frame[0] == p.REPLY:
            return [frame[2]]
        return self._error(frame)

    def _error(self, frame: list[Any]) -> Exception:
        _, _, kind, type_name, message, tb = frame[:6]
        if kind == "unknown_tool":
            return UnknownTool(message.split("'")[1] if "'" in message else message, self.tools)
        if kind == "cancelled":
            return CallTimeout(f"request on worker {self.worker_id} was skipped: its caller left")
        return ToolError(type_name, message, tb)

    def _crash(self, reason: str) -> WorkerCrashed:
        return WorkerCrashed(f"worker {self.worker_id} died: {reason}", self.worker_id, reason)

    def gone(self, reason: str) -> None:
        """The worker is unusable: fail everything it held, at once."""
        if self.closed.done():
            return
        crash = self._crash(reason)
        pending, self._pending = self._pending, {}
        for waiter, ticket, _ref in pending.values():
            if ticket is not None:
                ticket.end()
            if not waiter.done():
                waiter.set_exception(crash)
        for stream in self._streams.values():
            stream.push(p.ERROR, crash)
        current = asyncio.current_task()
        for pump in list(self._pumps):
            if pump is not current:
                pump.cancel()  # Ray would fail them too, later: end them now
        self.closed.set_result(reason)

    # -- requests --------------------------------------------------------------------------
    def _send(self, rid: int, tool: str, args: dict[str, Any], session: list[Any] | None) -> bytes:
        data = p.pack(p.request_frame(rid, tool, args, session), self.max_frame)
        if self.closed.done():
            raise WorkerCrashed(f"worker {self.worker_id} is gone", self.worker_id, delivered=False)
        return data

    async def request(
        self,
        tool: str,
        args: dict[str, Any],
        timeout: float | None,
        ticket: Ticket | None = None,
        session: list[Any] | None = None,
    ) -> Any:
        """Run a tool. ``ticket`` (if given) ends when the actor has really finished with the
        request, which may be after this coroutine raised `CallTimeout` or was cancelled."""
        rid = next(self._ids)
        try:
            ref = self._call.remote(self._send(rid, tool, args, session))
        except BaseException:
            if ticket is not None:
                ticket.end()  # nothing reached the actor
            raise
        waiter: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = (waiter, ticket, ref)
        when_done(ref, lambda cf: self._answered(rid, cf), self._loop)
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(timeout, expire, waiter, tool, self.worker_id, timeout)
        self.in_flight += 1
        self.requests += 1
        try:
            return await waiter
        except BaseException:
            self.errors += 1
            if rid in self._pending and not self.closed.done():
                self._tell("cancel", rid)  # it still holds the request: skip or cancel it
            raise
        finally:
            self.in_flight -= 1
            if timer is not None:
                timer.cancel()

    def stream(
        self,
        tool: str,
        args: dict[str, Any],
        timeout: float | None,
        ticket: Ticket | None = None,
        session: list[Any] | None = None,
    ) -> Stream:
        """Items of a generator tool through a Ray streaming generator, at most a window ahead
        of the caller (credit goes back with ``credit`` calls). ``ticket`` ends once the actor
        has really finished the stream, which is later than the caller when it left early."""
        rid = next(self._ids)
        try:
            gen = self._stream.remote(self._send(rid, tool, args, session))
        except BaseException:
            if ticket is not None:
                ticket.end()
            raise
        over = [False]  # its END or error came in

        def grant(n: int) -> None:
            if not self.closed.done():
                self._tell("credit", rid, n)

        def finish(completed: bool) -> None:
            self.in_flight -= 1
            self._streams.pop(rid, None)
            if not completed and not over[0] and not self.closed.done():
                self._tell("cancel", rid)  # the actor ends it with END; the pump drains it

        stream = Stream(self._loop, f"stream {tool} on {self.worker_id}", timeout, grant, finish)
        self._streams[rid] = stream
        self.in_flight += 1
        self.requests += 1
        pump = self._loop.create_task(self._pump(gen, stream, ticket, over), name=stream.what)
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        return stream

    async def _pump(
        self, gen: Any, stream: Stream, ticket: Ticket | None, over: list[bool]
    ) -> None:
        """Move the actor's frames into `stream` until its last one; the actor never runs more
        than the credit window ahead, so this holds at most that many items."""
        try:
            async for ref in gen:
                frame = p.unpack_body(memoryview(await ref)[4:])
                if frame[0] == p.ITEM:
                    stream.push(p.ITEM, frame[2])
                    continue
                over[0] = True
                if frame[0] == p.END:
                    stream.push(p.END)
                else:
                    stream.push(p.ERROR, self._error(frame))
        except RayActorError as exc:
            self.gone(f"its Ray actor died: {short(exc)}")
        except RayError as exc:
            stream.push(p.ERROR, self._crash(f"its stream was lost: {short(exc)}"))
        finally:
            if ticket is not None:
                ticket.end()

    def drop_session(self, session_id: str) -> None:
        """The session ended or moved to another worker: the actor forgets its state."""
        if not self.closed.done():
            self._tell("drop", session_id)

    def _tell(self, method: str, *args: Any) -> None:
        """A one-way control call; its outcome is read (and dropped) so that Ray never reports
        the error of a call to an actor that died meanwhile as unhandled."""
        with contextlib.suppress(Exception):
            when_done(getattr(self.actor, method).remote(*args), retrieve)

    async def ping(self, timeout: float) -> float:
        if self.closed.done():
            raise WorkerCrashed(f"worker {self.worker_id} is gone", self.worker_id, delivered=False)
        started = self._loop.time()
        try:
            answer = wait(self.actor.ping.remote(timeout), self._loop)
            alive = await asyncio.wait_for(answer, timeout)
        except RayActorError as exc:
            raise self._crash(short(exc)) from None
        except TimeoutError:
            alive = False
        if not alive:
            raise CallTimeout(f"ping of worker {self.worker_id} got no answer within {timeout} s")
        return self._loop.time() - started

    # -- ending ----------------------------------------------------------------------------
    async def stop(self, grace: float) -> None:
        """In-flight requests get `grace` s (this handle's, then any the actor runs, guests'
        included), then ``teardown()`` if none is left, then ``ray.kill``; returns once Ray
        reports the actor dead. Safe to cancel: the actor is then killed at once."""
        if self.closed.done():
            return
        try:
            deadline = self._loop.time() + grace
            while (self._pending or self._streams) and self._loop.time() < deadline:
                if self.closed.done():
                    return
                await asyncio.sleep(0.01)
            # Then the actor's own count: other runtimes' requests run there too (guests).
            if not self._pending and not self._streams and not self.closed.done():
                left = max(deadline - self._loop.time(), 0.0)
                if await self._ask("drain", left, timeout=left + DRAIN_SLACK) == 0:
                    left = deadline - self._loop.time()
                    failed = await self._ask("teardown", timeout=max(left, 1.0))
                    if failed:
                        _log.warning("teardown of worker %s failed: %s", self.worker_id, failed)
            self.kill(confirm=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._dead()), DEATH_WAIT)
        except asyncio.CancelledError:
            self.kill()
            raise
        finally:
            self.gone("stopped")

    async def _ask(self, method: str, *args: Any, timeout: float) -> Any:
        """A control call's answer, or None when the actor died or did not answer within
        `timeout` s (its outcome is read either way: no "unhandled error" from Ray)."""
        try:
            ref = getattr(self.actor, method).remote(*args)
            when_done(ref, retrieve)
            return await asyncio.wait_for(wait(ref, self._loop), timeout)
        except Exception:  # RayError, TimeoutError: dead or stuck, it is killed next anyway
            return None

    async def _dead(self) -> None:
        """Until the watch call failed: Ray's word that the actor is dead."""
        if self._watch is None:
            return
        with contextlib.suppress(Exception):
            await self._watch

    def kill(self, confirm: bool = False) -> None:
        """``ray.kill`` now; everything it held fails with `WorkerCrashed`. With `confirm` the
        handle stays open until Ray reports the death (`stop` waits for it)."""
        self._killed = True
        if not self.owned:
            self.gone("detached")  # another runtime's worker: ours to forget, not to kill
            return
        with contextlib.suppress(Exception):
            ray.kill(self.actor, no_restart=True)
        if not confirm:
            self.gone("killed")

    def statistics(self) -> dict[str, int]:
        return {"requests": self.requests, "errors": self.errors, "in_flight": self.in_flight}
