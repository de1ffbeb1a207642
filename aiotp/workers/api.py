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

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiotp.runtime import telemetry
from aiotp.runtime.errors import CallTimeout, RuntimeClosed
from aiotp.workers.errors import UnknownPool
from aiotp.workers.ticket import Ticket

if TYPE_CHECKING:
    from aiotp.runtime.ref import ActorRef
    from aiotp.runtime.runtime import Runtime
    from aiotp.workers.dispatcher import PoolStats
    from aiotp.workers.pool import Pool

__all__ = ["execute", "pool_stats", "start_pool", "stop_pool", "stream"]

DEFAULT_TIMEOUT = 5.0


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
) -> tuple[Pool, dict[str, Any], str | None]:
    """Validate a request and find its pool and preferred worker (execute and stream alike)."""
    if args is None:
        args = {}
    _check_request(rt, tool, args, timeout, session)
    pool = registry(rt).get(pool_name)
    prefer = pool.affinity_of(session) if session is not None else None
    return pool, args, prefer


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
    if session is not None and not isinstance(session, str):
        raise TypeError(f"session id must be a string, got {type(session).__name__}: {session!r}")


async def execute(
    rt: Runtime,
    pool_name: str,
    tool: str,
    args: dict[str, Any] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    session: str | None = None,
) -> Any:
    pool, args, prefer = _prepare(rt, pool_name, tool, args, timeout, session)
    loop = rt.loop
    started = loop.time()
    slot = await pool.dispatcher.checkout(prefer, timeout)
    while slot.handle.closed.done():
        # Handed a worker that died before our request was sent: nothing ran, so the death
        # is not ours to report. Give the slot back and take the next free worker.
        pool.dispatcher.checkin(slot)
        left = None if timeout is None else timeout - (loop.time() - started)
        if left is not None and left <= 0:
            raise CallTimeout(f"pool {pool.name!r}: no live worker for {tool!r} in time")
        slot = await pool.dispatcher.checkout(None, left)
    observed = bool(telemetry._handlers)
    if observed:
        meta = {"pool": pool.name, "tool": tool, "worker_id": slot.worker_id}
        telemetry.execute(("aiotp", "pool", "execute", "start"), {"system_time": time.time()}, meta)
    ok = False
    ticket = Ticket()
    try:
        remaining = None if timeout is None else timeout - (loop.time() - started)
        if remaining is not None and remaining <= 0:
            ticket.end()  # nothing was sent
            raise CallTimeout(f"pool {pool.name!r}: no time left to run {tool!r} after checkout")
        result = await slot.handle.request(tool, args, remaining, ticket)
        ok = True
    except BaseException as exc:
        if observed:
            telemetry.execute(
                ("aiotp", "pool", "execute", "exception"),
                {"duration": loop.time() - started},
                {**meta, "kind": type(exc).__name__, "error": exc},
            )
        raise
    finally:
        pool.release(slot, ticket, ok)
    if session is not None:
        pool.record_affinity(session, slot.worker_id)
    if observed:
        telemetry.execute(
            ("aiotp", "pool", "execute", "stop"), {"duration": loop.time() - started}, meta
        )
    return result


async def stream(
    rt: Runtime,
    pool_name: str,
    tool: str,
    args: dict[str, Any] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    session: str | None = None,
) -> AsyncIterator[Any]:
    """Items of a generator tool as they come. ``timeout`` bounds the wait for each item.

    Leaving the ``async for`` early (break, exception, cancellation) tells the worker to stop
    the generator; the worker's slot stays busy until it has (as for `execute`).
    """
    pool, args, prefer = _prepare(rt, pool_name, tool, args, timeout, session)
    slot = await pool.dispatcher.checkout(prefer, timeout)
    ok = False
    ticket = Ticket()
    try:
        agen = slot.handle.stream(tool, args, timeout, ticket)
        try:
            async for item in agen:
                yield item
        finally:
            await agen.aclose()
        ok = True
    finally:
        pool.release(slot, ticket, ok)
    if session is not None:
        pool.record_affinity(session, slot.worker_id)
