"""What aiotp's pytest plugin checks and starts, usable without pytest too.

- `Supervised` is ExUnit's ``start_supervised``: each call starts one child under a supervisor of
  the test's own and returns its ref; `stop_all` (the plugin calls it when the test ends) stops
  the children in reverse start order, as a supervisor's shutdown does, so that the test's
  actors are gone before anyone checks for leftovers. A child that fails to start raises
  `StartChildError` naming it and carrying what its start raised.
- `leftover_problems` lists the actors a test left alive (a pool left running is one line
  naming the pool, not its internal actors); `leak_problems` what it left behind once its
  runtime has shut down: tasks it started still pending (never those that existed before the
  test: another fixture's server, a session-scoped fixture's consumer) and child processes
  still alive. `ErrorRecords` collects ERROR log records; an ``expect_errors`` fragment matches
  a record's message or its formatted exception (`record_text`).

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
import weakref
from collections.abc import Iterable
from typing import Any

from aiotp.runtime.ref import ActorRef
from aiotp.runtime.runtime import Runtime
from aiotp.supervisors.errors import UnknownChild
from aiotp.supervisors.refs import SupervisorRef
from aiotp.supervisors.spec import ChildSpec
from aiotp.supervisors.supervisor import Supervisor

__all__ = [
    "ErrorRecords",
    "Supervised",
    "descendants",
    "leak_problems",
    "leftover_actors",
    "leftover_problems",
    "record_summary",
    "record_text",
    "task_snapshot",
]

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


def leftover_problems(rt: Runtime) -> list[str]:
    """`leftover_actors`, as lines for a report: a pool still running is one line naming it
    and how to stop it (its supervisor, workers and monitors are not listed one by one)."""
    left = leftover_actors(rt)
    if not left:
        return []
    registry = rt._extensions.get("aiotp.pools")  # no pool was ever started: none
    roots = {
        pool.supervisor: name
        for name, pool in (getattr(registry, "pools", None) or {}).items()
        if pool.supervisor is not None
    }
    pools: dict[str, int] = {}
    others: list[ActorRef] = []
    for ref in left:
        name = _pool_of(ref, roots)
        if name is None:
            others.append(ref)
        else:
            pools[name] = pools.get(name, 0) + 1
    problems = [
        f"pool {name!r} still running ({n} actor(s)): stop it with rt.stop_pool({name!r}), or "
        f"start it with start_supervised(aiotp.pool_spec({name!r}, ...))"
        for name, n in pools.items()
    ]
    if others:
        problems.append(
            f"{len(others)} actor(s) left alive at the end of the test (stop them, or start "
            "them with start_supervised): " + ", ".join(map(repr, others[:10]))
        )
    return problems


def _pool_of(ref: ActorRef | None, roots: dict[Any, str]) -> str | None:
    """The pool whose supervisor `ref` is or descends from (through its owners), or None."""
    for _ in range(64):  # a pool's tree is four deep; bounded all the same
        if ref is None:
            return None
        if ref in roots:
            return roots[ref]
        ref = ref.parent
    return None


def record_text(record: logging.LogRecord) -> str:
    """What an ``expect_errors`` fragment is looked for in: the record's message, then its
    formatted exception (type, reason, traceback) when it carries one, since an actor's crash
    is logged as "<ref> crashed" with its reason only in the exception."""
    text = record.getMessage()
    exc_info = record.exc_info
    if exc_info and exc_info[0] is not None:
        text += "\n" + _FORMATTER.formatException(exc_info)
    elif record.exc_text:
        text += "\n" + record.exc_text
    return text


_FORMATTER = logging.Formatter()


def record_summary(record: logging.LogRecord) -> str:
    """The record's message and the last line of its exception (type and reason), for a
    report: "<ref> crashed (ValueError: asked to crash)"."""
    message = record.getMessage()
    text = record_text(record)
    if text != message:
        message += " (" + text.rstrip().rsplit("\n", 1)[-1] + ")"
    return message[:300]


def task_snapshot() -> weakref.WeakSet[asyncio.Task[Any]]:
    """The tasks alive now (weakly held): pass it to `leak_problems` as ``tasks_before``."""
    return weakref.WeakSet(asyncio.all_tasks())


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
        return [r for r in self.records if not any(a in record_text(r) for a in allowed)]


async def leak_problems(
    processes_before: set[int],
    settle: float = 5.0,
    *,
    tasks_before: Iterable[asyncio.Task[Any]] | None = None,
) -> list[str]:
    """What is left after a runtime shut down: pending tasks (cancelled here, so that they do
    not outlive the test) and child processes not in `processes_before` (given `settle`
    seconds to exit, since a killed worker takes a moment to be reaped).

    ``tasks_before`` (a `task_snapshot` taken when the test's runtime started) are never
    reported nor cancelled: they belong to someone else (another fixture, a session-scoped
    server), who ends them in their own time. None looks at every task of the loop.
    """
    problems: list[str] = []
    current = asyncio.current_task()
    before = tasks_before if tasks_before is not None else ()
    tasks = [
        t for t in asyncio.all_tasks() if t is not current and not t.done() and t not in before
    ]
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


def descendants(root: int | None = None) -> list[int]:
    """Live (non-zombie) descendants of `root` (default: this process), read from /proc; []
    where there is none (the check is then skipped: the process profile needs Linux anyway)."""
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
    todo = [os.getpid() if root is None else root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
