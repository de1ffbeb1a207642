"""What aiotp's pytest plugin checks and starts, usable without pytest too.

- `Supervised` is ExUnit's ``start_supervised``: each call starts one child under a supervisor of
  the test's own and returns its ref; `stop_all` (the plugin calls it when the test ends) stops
  the children in reverse start order, as a supervisor's shutdown does, so that the test's
  actors are gone before anyone checks for leftovers. A child that fails to start raises
  `StartChildError` naming it and carrying what its start raised.
- `leak_problems` lists what a test left behind once its runtime has shut down: tasks still
  pending and child processes still alive. `ErrorRecords` collects ERROR log records.

The per-test supervisor is an ordinary `aiotp.Supervisor` (one_for_one, OTP's default intensity
of 3 restarts in 5 s on the runtime's clock), so a child that crashes during the test is
restarted as in production, and one that crashes in a loop takes the supervisor down, which the
next `start_supervised` and the end of the test report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from aiotp.runtime.ref import ActorRef
from aiotp.runtime.runtime import Runtime
from aiotp.supervisors.errors import UnknownChild
from aiotp.supervisors.refs import SupervisorRef
from aiotp.supervisors.spec import ChildSpec
from aiotp.supervisors.supervisor import Supervisor

__all__ = ["ErrorRecords", "Supervised", "descendants", "leak_problems", "leftover_actors"]

#: Actors the runtime starts for itself on first use and owns until shutdown: not a leak.
RUNTIME_SERVICES = frozenset({("aiotp", "plans")})


class Supervised:
    """``await start_supervised(Counter, 5, name="c")`` or ``await start_supervised(spec)``.

    Arguments after the class are the child's ``init`` arguments; ``id``, ``name``,
    ``restart`` and ``shutdown`` are its `ChildSpec` fields (the id defaults to the class name,
    numbered from the second child of one class on: ``"Counter"``, ``"Counter#2"``).
    """

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._sup: SupervisorRef | None = None
        self._ids: set[Any] = set()
        self.gave_up = False  # the supervisor exited on its own (restart intensity exceeded)

    async def __call__(
        self,
        child: Any,
        *args: Any,
        id: Any = None,  # ChildSpec's own word for it
        name: Any = None,
        restart: str = "permanent",
        shutdown: float | str | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        if isinstance(child, ChildSpec):
            if args or kwargs or id is not None or name is not None:
                raise TypeError("start_supervised(spec) takes no further arguments: put them in it")
            spec = child
        else:
            spec = ChildSpec(
                id if id is not None else self._free_id(getattr(child, "__name__", "child")),
                child,
                args=args,
                kwargs=kwargs,
                restart=restart,
                shutdown=shutdown,
                name=name,
            )
        sup = await self._supervisor()
        ref = await sup.start_child(spec)  # StartChildError names the child and its reason
        self._ids.add(spec.id)
        return ref

    async def stop(self, child: Any) -> None:
        """Stop one child now (by id or ref) and forget it: ExUnit's ``stop_supervised``."""
        sup = self._sup
        if sup is None:
            raise UnknownChild(f"no child {child!r} was started with start_supervised")
        if isinstance(child, ActorRef):
            found = [c.id for c in await sup.which_children() if c.ref is child]
            if not found:
                raise UnknownChild(f"{child!r} is not a running child of start_supervised")
            child = found[0]
        await sup.terminate_child(child)
        await sup.delete_child(child)
        self._ids.discard(child)

    async def stop_all(self) -> None:
        """Stop every child in reverse start order (the supervisor's own shutdown), then it."""
        sup, self._sup = self._sup, None
        if sup is None:
            return
        if not sup.alive:
            self.gave_up = True
            return
        await self._rt.stop(sup, "shutdown")

    async def _supervisor(self) -> SupervisorRef:
        if self._sup is not None and not self._sup.alive:
            raise RuntimeError(
                "start_supervised: the test's supervisor has exited (its children crashed more "
                f"than {Supervisor.max_restarts} times in {Supervisor.max_seconds} s)"
            )
        if self._sup is None:
            self._sup = await self._rt.spawn(Supervisor, [])
        return self._sup

    def _free_id(self, base: str) -> str:
        n = 1
        candidate = base
        while candidate in self._ids:
            n += 1
            candidate = f"{base}#{n}"
        return candidate


def leftover_actors(rt: Runtime) -> list[ActorRef]:
    """Actors alive now, except the runtime's own services (`RUNTIME_SERVICES`)."""
    return [ref for ref in rt.actors() if ref.name not in RUNTIME_SERVICES]


class ErrorRecords(logging.Handler):
    """Collects every record at ERROR or above, from any thread, while installed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def unexpected(self, allowed: tuple[str, ...] | None) -> list[logging.LogRecord]:
        """Records not allowed: None allows none, () allows all, else those holding a fragment."""
        if allowed is None:
            return list(self.records)
        if not allowed:
            return []
        return [r for r in self.records if not any(a in r.getMessage() for a in allowed)]


async def leak_problems(processes_before: set[int], settle: float = 5.0) -> list[str]:
    """What is left after a runtime shut down: pending tasks (cancelled here, so that they do
    not outlive the test) and child processes not in `processes_before` (given `settle`
    seconds to exit, since a killed worker takes a moment to be reaped)."""
    problems: list[str] = []
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if tasks:
        problems.append(f"{len(tasks)} task(s) left pending: " + ", ".join(map(repr, tasks[:5])))
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=settle)
    deadline = time.monotonic() + settle
    left = set(descendants()) - processes_before
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        left = set(descendants()) - processes_before
    if left:
        problems.append(f"child process(es) left alive: {sorted(left)}")
    return problems


def descendants() -> list[int]:
    """Live (non-zombie) descendants of this process, read from /proc; [] where there is none
    (the check is then skipped: the process profile needs Linux anyway)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue  # a zombie is dead; its parent reaps it
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
