"""`Supervisor`: starts children in order, restarts them by strategy, stops them in reverse.

::

    sup = await rt.spawn(aiotp.Supervisor, [
            aiotp.ChildSpec("db", Db),
            aiotp.ChildSpec("cache", Cache, restart="transient"),
        ], strategy="rest_for_one", max_restarts=3, max_seconds=5.0, name="app")
    await sup.which_children()      # [ChildInfo(id='db', ref=..., type='worker', ...), ...]

or the subclass style::

    class App(aiotp.Supervisor):
        strategy = "one_for_all"
        max_restarts = 5
        def children(self) -> list[aiotp.ChildSpec]:
            return [aiotp.ChildSpec("db", Db), aiotp.ChildSpec("cache", Cache)]

Strategies (OTP's): ``one_for_one`` restarts only the child that died; ``one_for_all`` stops all
others (reverse order) and restarts them all (start order); ``rest_for_one`` does that for the
children started after the one that died. Temporary children are never restarted, not even when
a sibling's death takes them down. Past the intensity (default 3 restarts in 5 s) the supervisor
stops its children and exits with ``"shutdown"``: its own supervisor decides what happens next.

A child that fails to start while the supervisor starts makes `spawn` raise `StartChildError`
naming it, after the children already started are stopped again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiotp.runtime.ref import ActorRef
from aiotp.supervisors.core import SupervisorCore, _Child
from aiotp.supervisors.errors import ChildRunning, DuplicateChild, UnknownChild
from aiotp.supervisors.refs import SupervisorRef
from aiotp.supervisors.spec import ChildSpec

__all__ = ["Supervisor"]


class Supervisor(SupervisorCore):
    ref_class = SupervisorRef

    def children(self) -> Sequence[ChildSpec]:
        """Override in subclasses to declare the children (used when none are passed)."""
        return []

    async def init(
        self,
        children: Sequence[ChildSpec] | None = None,
        *,
        strategy: str | None = None,
        max_restarts: int | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self._setup(
            strategy if strategy is not None else type(self).strategy,
            max_restarts if max_restarts is not None else type(self).max_restarts,
            max_seconds if max_seconds is not None else type(self).max_seconds,
        )
        specs = list(children) if children is not None else list(self.children())
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise TypeError(f"supervisor children must be ChildSpec, got {spec!r}")
            if spec.id in self._children:
                raise DuplicateChild(f"two children share the id {spec.id!r}")
            self._children[spec.id] = _Child(spec.id, spec, spec.args)
        started: list[_Child] = []
        for child in list(self._children.values()):
            try:
                await self._start(child)
            except BaseException:
                await self._stop_all(started)
                raise
            started.append(child)

    async def _operation(self, op: str, arg: Any) -> Any:
        if op == "$restart_child":
            return await self._restart_stopped(arg)
        if op == "$delete_child":
            return self._delete(arg)
        return await super()._operation(op, arg)

    async def _start_new(self, spec: ChildSpec) -> ActorRef:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child needs a ChildSpec, got {spec!r}")
        existing = self._children.get(spec.id)
        if existing is not None:
            state = "running" if existing.ref is not None else "present but stopped"
            raise DuplicateChild(f"child {spec.id!r} is already {state}")
        child = _Child(spec.id, spec, spec.args)
        self._children[spec.id] = child
        try:
            return await self._start(child)
        except BaseException:
            del self._children[spec.id]
            raise

    def _get(self, child_id: Any) -> _Child:
        child = self._children.get(child_id)
        if child is None:
            raise UnknownChild(f"no child {child_id!r} in {self.ref!r}")
        return child

    async def _terminate(self, child_id: Any) -> None:
        child = self._get(child_id)
        await self._stop_child(child)
        if child.spec.restart == "temporary":
            del self._children[child_id]

    async def _restart_stopped(self, child_id: Any) -> ActorRef:
        child = self._get(child_id)
        if child.ref is not None:
            raise ChildRunning(f"child {child_id!r} is running; terminate it first")
        return await self._start(child)

    def _delete(self, child_id: Any) -> None:
        child = self._get(child_id)
        if child.ref is not None:
            raise ChildRunning(f"child {child_id!r} is running; terminate it before deleting")
        del self._children[child_id]
