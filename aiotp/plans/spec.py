"""Tool specifications: what a tool reads and writes, and how it may be run.

::

    @tool_spec(reads={"db:users"}, writes={"cache:users"}, idempotent=True, timeout=30.0)
    def fetch_users(limit: int) -> list: ...

    score = pool_tool("ml", "score", reads={"model"}, idempotent=True)   # a tool in a pool

A plan step's tool is a function marked with `tool_spec` (it stays a plain, callable function;
its `ToolSpec` is ``fn.__tool_spec__``), a bare function (no resources, not idempotent), or a
`pool_tool`: a tool of an aiotp pool, run through ``rt.execute`` with the pool's supervision,
affinity and typed errors.

Defaults and why:
- ``reads``/``writes`` empty: a tool that declares nothing conflicts with nothing. Resources are
  plain strings ("db:users", "file:/tmp/x"); the planner orders any write against any other
  access to the same resource by step order.
- ``idempotent=False``: a failed step is retried only when running it twice is declared safe.
- ``concurrency_cap=None``: no cap; with N, at most N steps of this tool run at once in one
  executor.
- ``timeout=None``: the executor's ``default_timeout`` applies.
- ``latency_class=LatencyClass.MEDIUM``: a hint for analysis and traces; it changes no timing.
"""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import attrs

__all__ = ["LatencyClass", "ToolSpec", "pool_tool", "spec_of", "tool_spec"]

F = TypeVar("F", bound=Callable[..., Any])
SPEC_ATTR = "__tool_spec__"


class LatencyClass(enum.Enum):
    FAST = "fast"  # well under a second
    MEDIUM = "medium"  # about a second
    SLOW = "slow"  # seconds or more


def _resources(name: str) -> Callable[[Any], frozenset[str]]:
    def convert(value: Any) -> frozenset[str]:
        if value is None:
            return frozenset()
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise TypeError(f"{name} must be a set of resource names, got {value!r}")
        items = frozenset(value)
        for item in items:
            if not isinstance(item, str) or not item:
                raise TypeError(f"{name} must hold non-empty strings, got {item!r}")
        return items

    return convert


def _reads(value: Any) -> frozenset[str]:
    return _resources("reads")(value)


def _writes(value: Any) -> frozenset[str]:
    return _resources("writes")(value)


def _check_cap(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"concurrency_cap must be an int >= 1 or None, got {value!r}")


def _check_timeout(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None and (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"timeout must be a positive finite number of seconds or None, got {value!r}"
        )


@attrs.frozen
class ToolSpec:
    """A tool and its contract. ``kind`` is "sync" or "async" (a local function: sync ones run
    in a thread pool, async ones on the loop) or "pool" (``pool``/``pool_tool_name`` name it).
    """

    name: str
    fn: Callable[..., Any] | None = attrs.field(default=None, eq=False)
    reads: frozenset[str] = attrs.field(default=frozenset(), converter=_reads)
    writes: frozenset[str] = attrs.field(default=frozenset(), converter=_writes)
    idempotent: bool = False
    concurrency_cap: int | None = attrs.field(default=None, validator=_check_cap)
    latency_class: LatencyClass = LatencyClass.MEDIUM
    timeout: float | None = attrs.field(default=None, validator=_check_timeout)
    kind: str = "sync"
    pool: str | None = None
    pool_tool_name: str | None = None
    session: str | None = None

    @property
    def resources(self) -> frozenset[str]:
        return self.reads | self.writes


def tool_spec(
    *,
    reads: Iterable[str] | None = None,
    writes: Iterable[str] | None = None,
    idempotent: bool = False,
    concurrency_cap: int | None = None,
    latency_class: LatencyClass = LatencyClass.MEDIUM,
    timeout: float | None = None,
    name: str | None = None,
) -> Callable[[F], F]:
    """Declare a local tool's contract; the function itself is returned unchanged."""
    if not isinstance(idempotent, bool):
        raise TypeError(f"idempotent must be a bool, got {idempotent!r}")
    if not isinstance(latency_class, LatencyClass):
        raise TypeError(f"latency_class must be a LatencyClass, got {latency_class!r}")

    def mark(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@tool_spec needs a function, got {fn!r}")
        spec = ToolSpec(
            name=name or str(getattr(fn, "__qualname__", repr(fn))),
            fn=fn,
            reads=reads,
            writes=writes,
            idempotent=idempotent,
            concurrency_cap=concurrency_cap,
            latency_class=latency_class,
            timeout=timeout,
            kind="async" if inspect.iscoroutinefunction(fn) else "sync",
        )
        setattr(fn, SPEC_ATTR, spec)
        return fn

    return mark


def pool_tool(
    pool: str,
    tool: str,
    *,
    reads: Iterable[str] | None = None,
    writes: Iterable[str] | None = None,
    idempotent: bool = False,
    concurrency_cap: int | None = None,
    latency_class: LatencyClass = LatencyClass.MEDIUM,
    timeout: float | None = None,
    session: str | None = None,
) -> ToolSpec:
    """A tool of a running aiotp pool, as a plan step's tool (run through ``rt.execute``).

    Its arguments and result cross the pool's wire (msgpack types for the process profile).
    ``session`` routes it as ``rt.execute(..., session=)`` does (else the plan's session).
    """
    for what, value in (("pool", pool), ("tool", tool)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"pool_tool: {what} must be a non-empty string, got {value!r}")
    if session is not None and (not isinstance(session, str) or not session):
        raise TypeError(f"pool_tool: session must be a non-empty string, got {session!r}")
    return ToolSpec(
        name=f"{pool}.{tool}",
        reads=reads,
        writes=writes,
        idempotent=idempotent,
        concurrency_cap=concurrency_cap,
        latency_class=latency_class,
        timeout=timeout,
        kind="pool",
        pool=pool,
        pool_tool_name=tool,
        session=session,
    )


def spec_of(tool: Any) -> ToolSpec:
    """The `ToolSpec` of a step's tool: its own, the one `tool_spec` attached, or a default
    one for a bare function. `TypeError` names anything else."""
    if isinstance(tool, ToolSpec):
        return tool
    spec = getattr(tool, SPEC_ATTR, None)
    if isinstance(spec, ToolSpec):
        return spec
    if callable(tool):
        kind = "async" if inspect.iscoroutinefunction(tool) else "sync"
        return ToolSpec(name=getattr(tool, "__qualname__", repr(tool)), fn=tool, kind=kind)
    raise TypeError(
        f"a step's tool must be a function, a @tool_spec function or a pool_tool(...), got {tool!r}"
    )
