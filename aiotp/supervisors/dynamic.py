"""`DynamicSupervisor`: children started on demand, all alike, one_for_one.

::

    dyn = await rt.spawn(aiotp.DynamicSupervisor, max_children=100, name="sessions")
    ref = await dyn.start_child(aiotp.ChildSpec("session", SessionActor, args=("u1",)))
    await dyn.terminate_child(ref)

Semantics (Elixir's DynamicSupervisor):
- Strategy one_for_one only. The same spec may be started many times; ``extra_args`` (given at
  spawn) are prepended to each child's args.
- ``max_children`` (default None: unlimited; 0 allows none) bounds the children, counting those
  being restarted: a restarting child keeps its slot. Past it `start_child` raises `MaxChildren`.
- Children it will not restart (temporary ones, transient ones that ended normally) leave its
  counts and `which_children` at once.
- `terminate_child` takes the child's ref.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from aiotp.runtime.ref import ActorRef
from aiotp.supervisors.core import SupervisorCore, _Child
from aiotp.supervisors.errors import MaxChildren, UnknownChild
from aiotp.supervisors.refs import SupervisorRef
from aiotp.supervisors.spec import ChildSpec

__all__ = ["DynamicSupervisor"]


class DynamicSupervisor(SupervisorCore):
    ref_class = SupervisorRef
    forget_ended_children = True

    async def init(
        self,
        *,
        strategy: str = "one_for_one",
        max_children: int | None = None,
        max_restarts: int | None = None,
        max_seconds: float | None = None,
        extra_args: Sequence[Any] = (),
    ) -> None:
        if strategy != "one_for_one":
            raise ValueError(f"DynamicSupervisor supports one_for_one only, got {strategy!r}")
        if max_children is not None and (
            not isinstance(max_children, int) or isinstance(max_children, bool) or max_children < 0
        ):
            raise ValueError(f"max_children must be an int >= 0 or None, got {max_children!r}")
        if isinstance(extra_args, str | bytes) or not isinstance(extra_args, list | tuple):
            raise ValueError(f"extra_args must be a list or tuple, got {extra_args!r}")
        self._setup(
            strategy,
            max_restarts if max_restarts is not None else type(self).max_restarts,
            max_seconds if max_seconds is not None else type(self).max_seconds,
        )
        self.max_children = max_children
        self.extra_args = tuple(extra_args)
        self._keys = itertools.count()

    async def _start_new(self, spec: ChildSpec) -> ActorRef:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child needs a ChildSpec, got {spec!r}")
        if self.max_children is not None and len(self._children) >= self.max_children:
            raise MaxChildren(
                f"{self.ref!r} already has {len(self._children)} children "
                f"(max_children={self.max_children})"
            )
        child = _Child(next(self._keys), spec, self.extra_args + spec.args)
        self._children[child.key] = child
        try:
            return await self._start(child)
        except BaseException:
            del self._children[child.key]
            raise

    async def _terminate(self, ref: Any) -> None:
        child = next((c for c in self._children.values() if c.ref is ref), None)
        if child is None:
            raise UnknownChild(f"{ref!r} is not a running child of {self.ref!r}")
        await self._stop_child(child)
        del self._children[child.key]
