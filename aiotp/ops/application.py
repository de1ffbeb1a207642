"""`aiotp.Application`: a root supervision tree and its settings, started and stopped as one unit.

This is OTP's application: the unit an operator starts (``aiotp run module:app``), a web
framework embeds (a FastAPI lifespan), and a test starts whole. It owns one `Runtime` named after
it and one root `Supervisor` registered under its name; its children start in order and stop in
reverse order, as any supervisor's do.

Guarantees:
- `start` either returns a running application or raises `ApplicationStartError` (naming the
  application and carrying the failure as its cause) having stopped everything it had started;
  cancelled midway, it stops what it started, then lets the cancellation through.
- `stop` is idempotent and bounded: `on_stop` gets at most half of ``shutdown_timeout``, the
  tree the rest of it to stop gracefully (each child within its own shutdown time); whatever is
  still alive then is killed at once. After it returns no actor, task or worker process of the
  application is alive (an actor that swallows its kill is reported, not waited for forever).
  A `stop` during `start` cancels the start, which undoes what it had started.
- `wait` returns when the application ends on its own: its root supervisor exceeded its
  restart intensity (the failure escalated to the top, as an OTP permanent application whose
  top supervisor dies takes the node down) or someone stopped it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from aiotp.runtime import AiotpError, CallTimeout, Runtime
from aiotp.runtime.cancel import await_through_cancel, retrieve
from aiotp.supervisors import ChildSpec, Supervisor, SupervisorRef

__all__ = ["AppState", "Application", "ApplicationStartError", "Children", "Hook"]

_log = logging.getLogger("aiotp.application")

Children = Sequence[ChildSpec] | Callable[[Mapping[str, Any]], Sequence[ChildSpec]]
Hook = Callable[[Runtime], Awaitable[None]]


class ApplicationStartError(AiotpError):
    """The application could not start; the cause is the child's (or hook's) failure."""


class AppState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Application:
    """A named root supervision tree plus its settings.

    `children` is a list of `ChildSpec` (``aiotp.pool_spec(...)`` included), or a function of the
    settings returning one, so that a tree can be shaped by configuration. `on_start` runs once
    the tree is up (e.g. to warm a cache through a pool), `on_stop` before the tree stops (OTP's
    ``prep_stop``); both get the runtime.
    """

    def __init__(
        self,
        name: str,
        children: Children,
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        shutdown_timeout: float = 10.0,
        sessions: Any = None,
        settings: Mapping[str, Any] | None = None,
        on_start: Hook | None = None,
        on_stop: Hook | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"Application name must be a non-empty string, got {name!r}")
        if not callable(children):
            children = list(children)
            for spec in children:
                if not isinstance(spec, ChildSpec):
                    raise TypeError(
                        f"application {name!r}: children must be ChildSpec, got {spec!r}"
                    )
        if (
            isinstance(shutdown_timeout, bool)
            or not isinstance(shutdown_timeout, int | float)
            or not math.isfinite(shutdown_timeout)
            or shutdown_timeout <= 0
        ):
            raise ValueError(
                f"application {name!r}: shutdown_timeout must be a positive number of "
                f"seconds, got {shutdown_timeout!r}"
            )
        for hook_name, hook in (("on_start", on_start), ("on_stop", on_stop)):
            if hook is not None and not callable(hook):
                raise TypeError(f"application {name!r}: {hook_name} must be callable")
        self.name = name
        self.settings: Mapping[str, Any] = MappingProxyType(dict(settings or {}))
        self.shutdown_timeout = float(shutdown_timeout)
        self._children = children
        self._tree_options: dict[str, Any] = {
            "strategy": strategy,
            "max_restarts": max_restarts,
            "max_seconds": max_seconds,
        }
        self._sessions = sessions
        self._on_start = on_start
        self._on_stop = on_stop
        self._state = AppState.NEW
        self._runtime: Runtime | None = None
        self._root: SupervisorRef | None = None
        self._stopped: asyncio.Event | None = None
        self._start_task: asyncio.Future[Runtime] | None = None

    def __repr__(self) -> str:
        return f"<Application {self.name!r} {self._state.value}>"

    @property
    def state(self) -> AppState:
        return self._state

    @property
    def runtime(self) -> Runtime:
        """The running application's runtime (`AiotpError` when it is not running)."""
        if self._runtime is None or self._state is not AppState.RUNNING:
            raise AiotpError(f"application {self.name!r} is not running ({self._state.value})")
        return self._runtime

    @property
    def supervisor(self) -> SupervisorRef:
        """The root supervisor, registered under the application's name."""
        if self._root is None:
            raise AiotpError(f"application {self.name!r} has no tree ({self._state.value})")
        return self._root

    def child_specs(self) -> list[ChildSpec]:
        """The root's children, the settings applied when `children` is a function."""
        children = self._children
        specs = list(children(self.settings) if callable(children) else children)
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise TypeError(
                    f"application {self.name!r}: children must be ChildSpec, got {spec!r}"
                )
        return specs

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> Runtime:
        """Start the runtime and the tree; return the runtime once every child is up.

        A `stop` while this runs (a signal during start-up) cancels the start: what had
        started is stopped, and this raises `ApplicationStartError` ("stopped while starting").
        """
        if self._state is not AppState.NEW:
            raise AiotpError(
                f"application {self.name!r} cannot start: it is {self._state.value} "
                "(an application starts once; build a new one to start again)"
            )
        self._state = AppState.STARTING
        self._stopped = asyncio.Event()
        inner = asyncio.ensure_future(self._start())
        self._start_task = inner
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if inner.cancelled() and not (task is not None and task.cancelling()):
                raise ApplicationStartError(
                    f"application {self.name!r} was stopped while starting"
                ) from None
            inner.cancel()  # our caller gave up: the start's own cleanup undoes it
            await await_through_cancel(inner, self._cleanup_budget)
            raise

    async def _start(self) -> Runtime:
        rt = Runtime(
            name=self.name, shutdown_timeout=self.shutdown_timeout, sessions=self._sessions
        )
        self._runtime = rt
        try:
            await rt.__aenter__()
            specs = self.child_specs()
            root = await rt.spawn(Supervisor, specs, name=self.name, **self._tree_options)
            self._root = root
            if self._on_start is not None:
                await self._on_start(rt)
        except BaseException as exc:
            await await_through_cancel(self._close_runtime(), self._cleanup_budget)
            if isinstance(exc, Exception):
                raise ApplicationStartError(
                    f"application {self.name!r} failed to start: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        self._state = AppState.RUNNING
        _log.info("application %r started (%d children)", self.name, len(specs))
        return rt

    async def stop(self) -> None:
        """Stop the tree (reverse start order) and the runtime; idempotent, bounded.

        The tree gets what is left of ``shutdown_timeout`` after `on_stop` (which may take at
        most half of it); what is still alive then is killed at once.
        """
        if self._state in (AppState.NEW, AppState.STOPPED):
            self._state = AppState.STOPPED
            return
        assert self._stopped is not None
        if self._state is AppState.STARTING:
            assert self._start_task is not None
            self._start_task.cancel()  # its cleanup stops what had started
            await asyncio.shield(self._stopped.wait())
            return
        if self._state is AppState.STOPPING:
            await asyncio.shield(self._stopped.wait())
            return
        self._state = AppState.STOPPING
        task = asyncio.ensure_future(self._stop_everything())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # A cancelled stop still stops: the caller gets its cancellation afterwards.
            await await_through_cancel(task, self._cleanup_budget)
            raise

    @property
    def _cleanup_budget(self) -> float:
        # The graceful window, the kills' window, then the runtime's close, with room to spare.
        return 2 * self.shutdown_timeout + 5.0

    async def _stop_everything(self) -> None:
        rt, root = self._runtime, self._root
        assert rt is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        try:
            if self._on_stop is not None:
                await self._run_on_stop(rt, self.shutdown_timeout / 2)
            if root is not None and root.alive:
                try:
                    await rt.stop(root, "shutdown", timeout=max(0.001, deadline - loop.time()))
                except CallTimeout:
                    _log.warning(
                        "application %r: the tree did not stop within shutdown_timeout=%.1f s;"
                        " killing what is left",
                        self.name,
                        self.shutdown_timeout,
                    )
                except AiotpError:  # it died on its own meanwhile
                    pass
            if rt.actors():
                await self._kill_everything(rt)
        finally:
            await self._close_runtime()

    async def _run_on_stop(self, rt: Runtime, budget: float) -> None:
        assert self._on_stop is not None
        hook = asyncio.ensure_future(self._on_stop(rt))
        done, _ = await asyncio.wait({hook}, timeout=budget)
        if not done:
            # Not awaited after the cancel: a hook that swallows it must not hold the stop.
            hook.cancel()
            hook.add_done_callback(retrieve)
            _log.warning(
                "application %r: on_stop did not finish within %.1f s; stopping anyway",
                self.name,
                budget,
            )
        elif not hook.cancelled() and hook.exception() is not None:
            _log.error(
                "application %r: on_stop failed; stopping anyway",
                self.name,
                exc_info=hook.exception(),
            )

    async def _kill_everything(self, rt: Runtime) -> None:
        """Past the deadline: kill every actor still alive at once (workers die with theirs)."""
        refs = rt.actors()
        for ref in reversed(refs):
            rt.exit(ref, "kill")
        waits = {asyncio.ensure_future(rt.wait_exit(ref)) for ref in refs}
        _, pending = await asyncio.wait(waits, timeout=self.shutdown_timeout)
        for wait in pending:
            wait.cancel()
        if pending:
            _log.warning(
                "application %r: %d actor(s) ignored their kill", self.name, len(pending)
            )

    async def _close_runtime(self) -> None:
        rt = self._runtime
        try:
            if rt is not None:
                await rt.shutdown()
        finally:
            self._state = AppState.STOPPED
            if self._stopped is not None:
                self._stopped.set()
            _log.info("application %r stopped", self.name)

    async def wait(self) -> Any:
        """Wait until the root supervisor exits (or the application is stopped) and return its
        exit reason: ``"shutdown"`` after `stop`, the escalated failure otherwise."""
        root = self.supervisor
        if self._state is AppState.RUNNING:
            return await self.runtime.wait_exit(root)
        assert self._stopped is not None
        await asyncio.shield(self._stopped.wait())
        return root.exit_reason

    @property
    def running(self) -> bool:
        return self._state is AppState.RUNNING

    async def __aenter__(self) -> Runtime:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
