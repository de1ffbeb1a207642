"""The machinery shared by `Supervisor` and `DynamicSupervisor`: start, watch, restart, stop.

Concurrency decisions:
- A supervisor traps exits and handles one message at a time, so a child's death, an API call
  and a shutdown request are never interleaved: each sees the tree as the previous one left it.
- A child being stopped by us is removed from the running set *before* we stop it, so the Exit
  message its death produces later is recognised as expected and never triggers a restart.
- A failed restart is re-queued as a message to ourselves, not retried in a loop, so that a
  shutdown already in the mailbox wins; every attempt counts against the intensity.

Logging (logger ``aiotp.supervisor``): a child's failed restart is one ERROR record with the
cause's traceback, the first time; its further failed attempts, until it starts again, are
DEBUG lines, and so is a cause a lower layer logged already (`aiotp.runtime.reports`: a pool
logs its workers' start failures itself). Giving up (restart intensity exceeded) is one ERROR
line. A child's death is not logged here: its crash report is the runtime's (``aiotp.actor``).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, cast

from aiotp.runtime import reports, telemetry
from aiotp.runtime.actor import Actor
from aiotp.runtime.messages import NOREPLY, Exit, is_normal_exit
from aiotp.runtime.ref import ActorRef, Caller
from aiotp.supervisors.errors import (
    ChildRunning,
    DuplicateChild,
    MaxChildren,
    StartChildError,
    UnknownChild,
)
from aiotp.supervisors.intensity import RestartIntensity
from aiotp.supervisors.spec import ChildSpec

__all__ = ["ChildInfo", "ChildStatus", "SupervisorCore"]

_log = logging.getLogger("aiotp.supervisor")


class ChildInfo(NamedTuple):
    """One entry of `which_children()`: ``(id, ref, type, restart)``; ref is None when the
    child is not running (stopped with `terminate_child`, or a transient child that ended)."""

    id: Any
    ref: ActorRef | None
    type: str
    restart: str


class ChildStatus(NamedTuple):
    """One child as `SupervisorCore.children_status` sees it: `ChildInfo` plus ``restarts``,
    how many times this supervisor restarted it after a death (its own or, with one_for_all
    and rest_for_one, a sibling's)."""

    id: Any
    ref: ActorRef | None
    type: str
    restart: str
    restarts: int
    start: Any  # the spec's actor class or start factory (what a stopped child would run)


class _Child:
    __slots__ = ("args", "key", "ref", "restarts", "spec")

    def __init__(self, key: Any, spec: ChildSpec, args: tuple[Any, ...]) -> None:
        self.key = key
        self.spec = spec
        self.args = args
        self.ref: ActorRef | None = None
        self.restarts = 0


class SupervisorCore(Actor):
    """Not for direct use: subclass `Supervisor` or `DynamicSupervisor`."""

    strategy: str = "one_for_one"
    max_restarts: int = 3
    max_seconds: float = 5.0

    def _setup(self, strategy: str, max_restarts: int, max_seconds: float) -> None:
        if strategy not in ("one_for_one", "one_for_all", "rest_for_one"):
            raise ValueError(
                f"strategy must be one_for_one, one_for_all or rest_for_one, got {strategy!r}"
            )
        self.trap_exit = True
        self.strategy = strategy
        # The window runs on the runtime's clock, so a test can cross it in virtual time.
        self._intensity = RestartIntensity(max_restarts, max_seconds, self.runtime.clock.now)
        self._children: dict[Any, _Child] = {}  # insertion order is start order
        self._running: dict[ActorRef, _Child] = {}
        self._stopped_by_us: set[ActorRef] = set()  # their Exit messages are expected
        self._shutting_down = False
        self._failing: set[Any] = set()  # keys of children whose last restart failed

    # -- starting -----------------------------------------------------------------------
    async def _start(self, child: _Child) -> ActorRef:
        spec = child.spec
        ref: ActorRef
        try:
            if isinstance(spec.start, type):
                start = cast(type[Actor], spec.start)
                ref = await self.runtime.spawn(
                    start,
                    *child.args,
                    name=spec.registered_name,
                    link=True,
                    **spec.init_kwargs,
                )
            else:
                made = await spec.start(*child.args, **spec.kwargs)
                if not isinstance(made, ActorRef):
                    raise TypeError(f"start factory returned {made!r}, not an ActorRef")
                ref = made
                self.link(ref)
        except Exception as exc:
            raise StartChildError(spec.id, exc) from exc
        child.ref = ref
        self._running[ref] = child
        self._emit("started", child)
        return ref

    # -- stopping -----------------------------------------------------------------------
    async def _stop_child(self, child: _Child) -> Any:
        ref = child.ref
        if ref is None:
            return None
        self._running.pop(ref, None)
        self._stopped_by_us.add(ref)
        child.ref = None
        policy = child.spec.shutdown_policy
        if policy == "brutal_kill":
            self.runtime.exit(ref, "kill")
            reason = await self.runtime.stop_or_kill(ref, "shutdown", None)
        elif policy == "infinity":
            reason = await self.runtime.stop_or_kill(ref, "shutdown", None)
        else:
            assert isinstance(policy, int | float)
            reason = await self.runtime.stop_or_kill(ref, "shutdown", float(policy))
        self._emit("terminated", child, reason=reason)
        return reason

    async def _stop_all(self, children: list[_Child]) -> None:
        for child in reversed(children):
            await self._stop_child(child)

    async def terminate(self, reason: Any) -> None:
        self._shutting_down = True
        await self._stop_all(list(self._children.values()))

    # -- reacting to deaths -------------------------------------------------------------
    async def handle_info(self, msg: Any) -> None:
        if isinstance(msg, Exit):
            child = self._running.pop(msg.sender, None) if msg.sender is not None else None
            if child is not None:
                child.ref = None
                await self._child_exited(child, msg.reason)
            elif msg.sender in self._stopped_by_us:
                self._stopped_by_us.discard(msg.sender)
            elif msg.reason != "normal":
                # An exit signal from our parent (or rt.exit): shut the tree down, as OTP does.
                self.stop(msg.reason)
            return
        if isinstance(msg, tuple) and msg and msg[0] == "$retry":
            await self._restart_keys(msg[1])
            return
        await self.handle_other_info(msg)

    async def handle_other_info(self, msg: Any) -> None:
        _log.debug("%r ignored %r", self.ref, msg)

    def _wants_restart(self, child: _Child, reason: Any) -> bool:
        restart = child.spec.restart
        if restart == "permanent":
            return True
        if restart == "transient":
            return not is_normal_exit(reason)
        return False

    async def _child_exited(self, child: _Child, reason: Any) -> None:
        self._emit("exited", child, reason=reason)
        if not self._wants_restart(child, reason):
            if child.spec.restart == "temporary" or self.forget_ended_children:
                self._children.pop(child.key, None)
            return
        if not self._intensity.add():
            self._give_up(child, reason)
            return
        order = list(self._children.values())
        if self.strategy == "one_for_one":
            affected = [child]
        elif self.strategy == "one_for_all":
            affected = order
        else:  # rest_for_one
            affected = order[order.index(child) :]
        others = [c for c in affected if c is not child]
        await self._stop_all(others)
        for c in others:
            if c.spec.restart == "temporary":  # never restarted, not even after a sibling
                self._children.pop(c.key, None)
        keys = [c.key for c in affected if c.key in self._children]
        await self._restart_keys(keys, restarted=child.key)

    #: DynamicSupervisor forgets children it will not restart; Supervisor keeps their specs.
    forget_ended_children = False

    async def _restart_keys(self, keys: list[Any], restarted: Any = None) -> None:
        for i, key in enumerate(keys):
            child = self._children.get(key)
            if child is None or child.ref is not None:
                continue
            try:
                await self._start(child)
            except StartChildError as exc:
                self._restart_failed(child, exc.cause)
                if not self._intensity.add():
                    self._give_up(child, exc)
                    return
                self.ref.send(("$retry", keys[i:]))
                return
            child.restarts += 1
            self._failing.discard(key)
            if key == restarted or restarted is None:
                self._emit("restarted", child)

    def _restart_failed(self, child: _Child, cause: BaseException) -> None:
        """One ERROR record with the traceback per failing child, not one per attempt."""
        if child.key in self._failing or reports.reported(cause):
            again = "again" if child.key in self._failing else "(reported above)"
            _log.debug("%r: restart of %r failed %s: %r", self.ref, child.spec.id, again, cause)
        else:
            _log.error(
                "%r: restart of %r failed: %r", self.ref, child.spec.id, cause, exc_info=cause
            )
            reports.mark_reported(cause)
        self._failing.add(child.key)

    def _give_up(self, child: _Child, reason: Any) -> None:
        telemetry.execute(
            ("aiotp", "supervisor", "intensity_exceeded"),
            {"max_restarts": self._intensity.max_restarts},
            {"supervisor": self.ref, "child_id": child.spec.id, "reason": reason},
        )
        _log.error(
            "%r: more than %d restarts in %s s (last: %r, %r); shutting down",
            self.ref,
            self._intensity.max_restarts,
            self._intensity.max_seconds,
            child.spec.id,
            reason,
        )
        self.stop("shutdown")

    def _emit(self, what: str, child: _Child, **meta: Any) -> None:
        if telemetry._handlers:
            telemetry.execute(
                ("aiotp", "supervisor", "child", what),
                {"count": 1},
                {"supervisor": self.ref, "child_id": child.spec.id, "ref": child.ref, **meta},
            )

    # -- the API, as messages (SupervisorRef's methods send them) ----------------------------
    async def handle_call(self, msg: Any, caller: Caller) -> Any:
        if not (isinstance(msg, tuple) and len(msg) in (1, 2) and isinstance(msg[0], str)):
            return await self.handle_other_call(msg, caller)
        try:
            return await self._operation(msg[0], msg[1] if len(msg) == 2 else None)
        except (
            DuplicateChild,
            UnknownChild,
            ChildRunning,
            MaxChildren,
            StartChildError,
            TypeError,
        ) as exc:
            caller.fail(exc)  # the caller's mistake: tell them, do not crash the supervisor
            return NOREPLY

    async def _operation(self, op: str, arg: Any) -> Any:
        """One API operation; subclasses add theirs and defer to this for the shared ones."""
        if op == "$which_children":
            return self._which_children()
        if op == "$count_children":
            return self._count_children()
        if op == "$start_child":
            return await self._start_new(arg)
        if op == "$terminate_child":
            return await self._terminate(arg)
        raise TypeError(f"{type(self).__name__} has no operation {op!r}")

    async def handle_other_call(self, msg: Any, caller: Caller) -> Any:
        """Calls that are not supervisor operations (for subclasses); refused by default."""
        caller.fail(TypeError(f"{type(self).__name__} {self.ref!r} does not understand {msg!r}"))
        return NOREPLY

    async def _start_new(self, spec: ChildSpec) -> ActorRef:
        raise NotImplementedError

    async def _terminate(self, child: Any) -> None:
        raise NotImplementedError

    # -- introspection --------------------------------------------------------------------
    def _which_children(self) -> list[ChildInfo]:
        return [
            ChildInfo(c.spec.id, c.ref, c.spec.type, c.spec.restart)
            for c in self._children.values()
        ]

    def children_status(self) -> list[ChildStatus]:
        """The children now, in start order, with their restart counts.

        A plain read for `aiotp.ops.snapshot`, which runs on the loop between messages: a call
        would queue behind whatever the supervisor is doing (restarting a pool, say) and stall
        the snapshot. Empty before `init` set the supervisor up."""
        children = getattr(self, "_children", None)
        if children is None:
            return []
        return [
            ChildStatus(c.spec.id, c.ref, c.spec.type, c.spec.restart, c.restarts, c.spec.start)
            for c in children.values()
        ]

    def _count_children(self) -> dict[str, int]:
        children = list(self._children.values())
        return {
            "specs": len(children),
            "active": sum(1 for c in children if c.ref is not None and c.ref.alive),
            "supervisors": sum(1 for c in children if c.spec.type == "supervisor"),
            "workers": sum(1 for c in children if c.spec.type == "worker"),
        }
