"""What `rt.execute`, `rt.stream`, `rt.start_pool`, `rt.stop_pool` and `rt.pool_stats` do.

The Runtime forwards those methods here (imported on first use, so the actor core never loads
the workers package unless pools are used).

Guarantees of `execute` / `stream`:
- Bad input is refused before anything is queued or sent, with a typed error naming it: unknown
  pool (`UnknownPool`), a tool name that is not a string, arguments that are not a dict with
  string keys, a session id that is not a string (`TypeError`), a timeout that is not positive
  (`ValueError`), arguments msgpack cannot carry (`SerializationError`, from the worker handle).
- The caller always gets a result or a typed error within ``timeout`` (default 5 s, the call
  default): `PoolBusy`, `CheckoutTimeout`, `CallTimeout`, `WorkerCrashed`, `ToolError`,
  `UnknownTool`. Never silence, never a hang.
- ``timeout`` bounds the whole request: the wait for a free worker (itself capped by the pool's
  ``checkout_timeout``) plus the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiotp.runtime import telemetry
from aiotp.runtime.errors import CallTimeout, RuntimeClosed
from aiotp.workers.config import check_affinity, check_retry
from aiotp.workers.errors import (
    SessionWorkerLost,
    UnknownPool,
    WorkerCrashed,
)
from aiotp.workers.ticket import Ticket

if TYPE_CHECKING:
    from aiotp.runtime.ref import ActorRef
    from aiotp.runtime.runtime import Runtime
    from aiotp.workers.dispatcher import PoolStats, WorkerSlot
    from aiotp.workers.pool import Pool
    from aiotp.workers.retry import Retry

__all__ = ["execute", "pool_stats", "start_pool", "stop_pool", "stream"]

DEFAULT_TIMEOUT = 5.0

# The prefix of a request's events, tested once per request (see telemetry.observes).
_EXECUTE = ("aiotp", "pool", "execute")


class PoolRegistry:
    """The runtime's pools by name (a Runtime extension)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.pools: dict[str, Pool] = {}

    def get(self, name: Any) -> Pool:
        pool = self.pools.get(name)
        if pool is None:
            known = ", ".join(sorted(map(repr, self.pools))) or "none"
            raise UnknownPool(f"no pool named {name!r} (pools: {known})")
        return pool


def registry(rt: Runtime) -> PoolRegistry:
    reg = rt._extensions.get("aiotp.pools")  # the hot path: one dict lookup
    if reg is None:
        reg = rt.extension("aiotp.pools", PoolRegistry)
    return reg


async def start_pool(rt: Runtime, name: str, adapter: Any, **options: Any) -> ActorRef:
    from aiotp.workers.pool_tree import start_pool_supervisor

    return await start_pool_supervisor(rt, name, adapter, **options)


async def stop_pool(rt: Runtime, name: str, timeout: float | None = None) -> None:
    """Stop a pool. A pool inside a supervision tree (`pool_spec`) is stopped through its
    supervisor (terminate_child), so that the tree does not restart it as a crashed child."""
    from aiotp.supervisors import SupervisorRef

    pool = registry(rt).get(name)
    sup = pool.supervisor
    if sup is None or not sup.alive:
        return
    parent = sup._parent
    if isinstance(parent, SupervisorRef) and parent.alive:
        await parent.terminate_child(name, timeout=timeout)
    else:
        await rt.stop(sup, "shutdown", timeout=timeout)


def pool_stats(rt: Runtime, name: str) -> PoolStats:
    return registry(rt).get(name).stats()


def _prepare(
    rt: Runtime, pool_name: Any, tool: Any, args: Any, timeout: Any, session: Any
) -> tuple[Pool, dict[str, Any]]:
    """Validate a request and find its pool (execute and stream alike)."""
    if args is None:
        args = {}
    _check_request(rt, tool, args, timeout, session)
    return registry(rt).get(pool_name), args


def _check_request(rt: Runtime, tool: Any, args: Any, timeout: Any, session: Any) -> None:
    if not rt.running:
        raise RuntimeClosed(f"execute {tool!r}: the runtime is not running")
    if not isinstance(tool, str):
        raise TypeError(f"tool name must be a string, got {tool!r}")
    if not isinstance(args, dict):
        raise TypeError(f"tool arguments must be a dict, got {type(args).__name__}: {args!r}")
    for key in args:
        if not isinstance(key, str):
            raise TypeError(f"tool argument names must be strings, got {key!r}")
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if session is not None and (not isinstance(session, str) or not session):
        raise TypeError(f"session id must be a non-empty string, got {session!r}")


async def execute(
    rt: Runtime,
    pool_name: str,
    tool: str,
    args: dict[str, Any] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    session: str | None = None,
    *,
    affinity: str | None = None,
    retry: Retry | None = None,
) -> Any:
    pool, args = _prepare(rt, pool_name, tool, args, timeout, session)
    mode = pool.config.affinity if affinity is None else check_affinity(affinity)
    policy = pool.config.retry if retry is None else check_retry(retry)
    loop = rt.loop
    started = loop.time()
    delays: Iterator[float] | None = None
    while True:
        try:
            return await _attempt(pool, tool, args, timeout, started, session, mode)
        except WorkerCrashed as exc:
            left = None if timeout is None else timeout - (loop.time() - started)
            if not exc.delivered:
                # Nothing reached a worker: always safe to send again, never a crash to report.
                if left is not None and left <= 0:
                    raise CallTimeout(
                        f"pool {pool.name!r}: no live worker took {tool!r} in time"
                    ) from exc
                continue
            if policy is None or tool not in pool.idempotent or isinstance(exc, SessionWorkerLost):
                raise
            if delays is None:
                delays = policy.delays()
            delay = next(delays, None)
            if delay is None or (left is not None and delay >= left):
                raise
            pool.dispatcher.retries += 1
            if telemetry._handlers and telemetry.observes(_EXECUTE):
                telemetry.execute(
                    ("aiotp", "pool", "execute", "retry"),
                    {"delay": delay},
                    {"pool": pool.name, "tool": tool, "worker_id": exc.worker_id},
                )
            await asyncio.sleep(delay)


async def _checkout(
    pool: Pool, session: str | None, mode: str, timeout: float | None
) -> tuple[WorkerSlot, list[Any] | None]:
    if session is None:
        return await pool.dispatcher.checkout(timeout), None
    return await pool.router.checkout(session, mode, timeout, guests=True)


async def _attempt(
    pool: Pool,
    tool: str,
    args: dict[str, Any],
    timeout: float | None,
    started: float,
    session: str | None,
    mode: str,
) -> Any:
    """One try of a request: a worker, the request, the books."""
    loop = pool.rt.loop
    left = None if timeout is None else timeout - (loop.time() - started)
    if left is not None and left <= 0:
        raise CallTimeout(f"pool {pool.name!r}: no time left to run {tool!r}")
    context: list[Any] | None = None
    if session is not None:
        slot, context = await pool.router.checkout(session, mode, left, guests=True)
        if getattr(slot, "guest", False):
            return await _guest_attempt(pool, slot, tool, args, timeout, started, context, mode)
    else:
        # A free worker without a coroutine of its own: the common case on the hot path.
        slot = pool.dispatcher.take_now() or await pool.dispatcher.checkout(left)
    observed = bool(telemetry._handlers) and telemetry.observes(_EXECUTE)
    if observed:
        meta = {"pool": pool.name, "tool": tool, "worker_id": slot.worker_id}
        telemetry.execute(("aiotp", "pool", "execute", "start"), {"system_time": time.time()}, meta)
    outcome = "error"
    ticket = Ticket()
    # The latency is a duration: perf_counter, not loop.time (1 ms steps under uvloop).
    sent = time.perf_counter()
    try:
        remaining = None if timeout is None else timeout - (loop.time() - started)
        if remaining is not None and remaining <= 0:
            ticket.end()  # nothing was sent
            raise CallTimeout(f"pool {pool.name!r}: no time left to run {tool!r} after checkout")
        if context is None:
            result = await slot.handle.request(tool, args, remaining, ticket)
        else:
            result = await slot.handle.request(tool, args, remaining, ticket, context)
            if context[1] is not None:
                slot.settings_sent[context[0]] = context[1]  # the worker holds them now
        outcome = "ok"
    except BaseException as exc:
        if observed:
            telemetry.execute(
                ("aiotp", "pool", "execute", "exception"),
                {"duration": loop.time() - started},
                {**meta, "kind": type(exc).__name__, "error": exc},
            )
        if isinstance(exc, asyncio.CancelledError):
            outcome = "cancelled"
        elif session is not None:
            failure = _session_failure(pool, session, mode, slot, exc)
            if failure is not None:
                raise failure from exc
        raise
    finally:
        pool.dispatcher.latency.record(time.perf_counter() - sent)
        pool.release(slot, ticket, outcome, _after(pool, session, slot, mode))
    if observed:
        telemetry.execute(
            ("aiotp", "pool", "execute", "stop"), {"duration": loop.time() - started}, meta
        )
    return result


async def _guest_stream(
    pool: Pool,
    slot: Any,
    tool: str,
    args: dict[str, Any],
    timeout: float | None,
    context: list[Any],
    mode: str,
) -> AsyncIterator[Any]:
    """A stream of a session pinned to another runtime's Ray worker (as `_guest_attempt`)."""
    agen = slot.handle.stream(tool, args, timeout, Ticket(), context)
    try:
        async for item in agen:
            yield item
    except WorkerCrashed as exc:
        raise _guest_failure(pool, slot, context, mode, exc) from exc
    finally:
        await agen.aclose()
    if context[1] is not None:
        slot.settings_sent[context[0]] = context[1]


def _guest_failure(
    pool: Pool, slot: Any, context: list[Any], mode: str, exc: WorkerCrashed
) -> WorkerCrashed:
    """What the caller gets when the other runtime's worker died under its request."""
    if isinstance(exc, SessionWorkerLost):
        return exc
    pool.router.guest_lost(context[0])
    if mode in ("strict_queue", "strict_fail_fast"):
        return pool.router.lost_error(context[0], slot.worker_id)
    return exc


async def _guest_attempt(
    pool: Pool,
    slot: Any,
    tool: str,
    args: dict[str, Any],
    timeout: float | None,
    started: float,
    context: list[Any],
    mode: str,
) -> Any:
    """A request of a session pinned to another runtime's Ray worker (ray_guests.py): sent
    there, outside this pool's dispatcher and books; its death loses the session's state."""
    remaining = None if timeout is None else timeout - (pool.rt.loop.time() - started)
    if remaining is not None and remaining <= 0:
        raise CallTimeout(f"pool {pool.name!r}: no time left to run {tool!r}")
    try:
        result = await slot.handle.request(tool, args, remaining, Ticket(), context)
    except WorkerCrashed as exc:
        failure = _guest_failure(pool, slot, context, mode, exc)
        if failure is exc:
            raise
        raise failure from exc
    if context[1] is not None:
        slot.settings_sent[context[0]] = context[1]
    return result


def _session_failure(
    pool: Pool, session: str, mode: str, slot: WorkerSlot, exc: BaseException
) -> BaseException | None:
    """What a session request's failure becomes: None to raise it as it is."""
    if not isinstance(exc, WorkerCrashed) or isinstance(exc, SessionWorkerLost):
        return None
    if mode != "hint" and exc.delivered:
        return pool.router.crashed(session, slot, exc)
    return None


def _after(
    pool: Pool, session: str | None, slot: WorkerSlot, mode: str
) -> Callable[[], None] | None:
    """What to do once the worker is really done with a session request (see
    `SessionRouter.after`): run when the request's ticket ends, not when its caller left, so
    that a request still queued in the worker cannot bring back state dropped before it ran."""
    if session is None:
        return None
    return lambda: pool.router.after(session, slot, mode)


async def stream(
    rt: Runtime,
    pool_name: str,
    tool: str,
    args: dict[str, Any] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    session: str | None = None,
    *,
    affinity: str | None = None,
) -> AsyncIterator[Any]:
    """Items of a generator tool as they come. ``timeout`` bounds the wait for each item.

    Leaving the ``async for`` early (break, exception, cancellation) tells the worker to stop
    the generator; the worker's slot stays busy until it has (as for `execute`), and the
    request counts as cancelled, not as an error. Streams are never retried: items may already
    have reached the caller.
    """
    pool, args = _prepare(rt, pool_name, tool, args, timeout, session)
    mode = pool.config.affinity if affinity is None else check_affinity(affinity)
    while True:
        slot, context = await _checkout(pool, session, mode, timeout)
        if getattr(slot, "guest", False):
            assert context is not None
            async for item in _guest_stream(pool, slot, tool, args, timeout, context, mode):
                yield item
            return
        ticket = Ticket()
        try:
            if context is None:
                agen = slot.handle.stream(tool, args, timeout, ticket)
            else:
                agen = slot.handle.stream(tool, args, timeout, ticket, context)
        except WorkerCrashed as exc:
            pool.release(slot, ticket, "error", _after(pool, session, slot, mode))
            if exc.delivered:
                raise
            continue  # the worker was gone before a byte was sent: nothing ran, try another
        except BaseException:
            pool.release(slot, ticket, "error", _after(pool, session, slot, mode))
            raise
        break
    outcome = "error"
    try:
        try:
            async for item in agen:
                yield item
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "cancelled"  # the consumer left early
            raise
        finally:
            await agen.aclose()
        outcome = "ok"
    except BaseException as exc:
        if session is not None and outcome == "error":
            failure = _session_failure(pool, session, mode, slot, exc)
            if failure is not None:
                raise failure from exc
        raise
    finally:
        pool.release(slot, ticket, outcome, _after(pool, session, slot, mode))
