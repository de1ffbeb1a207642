"""The Runtime: owns the actors of one event loop, their names, and an orderly shutdown.

::

    async with aiotp.Runtime() as rt:
        ref = await rt.spawn(Counter, 0, name="counter")
        await rt.cast("counter", 1)
        assert await rt.call("counter", "get") == 1

or ``aiotp.run(main)`` with ``async def main(rt): ...``, which also picks uvloop when installed.

Guarantees:
- `spawn` returns once the actor's `init` has finished, and raises what `init` raised.
- Leaving the ``async with`` block stops the actors that were spawned from outside any actor, in
  reverse start order, each with ``rt.stop(ref, "shutdown")`` bounded by `shutdown_timeout`
  (default 5 s, as a worker's shutdown in OTP) and then killed; actors spawned inside actors are
  stopped by their owners (a supervisor stops its children). Whatever is left is killed, and no
  task is left pending.
- Timers (`send_after`) and everything built on them run on the runtime's clock: real time by
  default, simulated time with ``Runtime(clock=aiotp.VirtualClock())`` (`aiotp.runtime.clock`).
- `stop` is GenServer.stop: the request is queued behind the messages already in the mailbox,
  `terminate` runs, and `stop` returns once the actor is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

from aiotp.runtime import telemetry
from aiotp.runtime.actor import Actor
from aiotp.runtime.cancel import await_through_cancel, retrieve
from aiotp.runtime.clock import Clock, RealClock
from aiotp.runtime.errors import AiotpError, CallTimeout, NoProc, RuntimeClosed
from aiotp.runtime.jobs import Jobs
from aiotp.runtime.process import actor_main
from aiotp.runtime.ref import DONE, STOP, ActorRef, Phase, Timer, _current
from aiotp.runtime.registry import Registry
from aiotp.runtime.signals import Signals

if TYPE_CHECKING:
    # Types only: these layers sit above the runtime, which forwards to them at run time
    # (imported on first use) and names their types so that `rt.start_pool` and friends are
    # typed where users call them.
    from aiotp.ops.snapshot import Snapshot
    from aiotp.session_store import SessionStore
    from aiotp.supervisors import SupervisorRef
    from aiotp.supervisors.core import SupervisorCore
    from aiotp.workers.options import Affinity, PoolOptions
    from aiotp.workers.pool_stats import PoolStats
    from aiotp.workers.retry import Retry

__all__ = ["Runtime"]

_log = logging.getLogger("aiotp.runtime")

T = TypeVar("T")
Target = ActorRef | Any  # a ref or a registered name


class _State(Enum):
    NEW = "NEW"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"


_TRANSITIONS = {
    _State.NEW: {_State.RUNNING},
    _State.RUNNING: {_State.STOPPING},
    _State.STOPPING: {_State.STOPPED},
    _State.STOPPED: set(),
}


class Runtime:
    """A home for actors on the running event loop. Use it as an async context manager."""

    def __init__(
        self,
        *,
        shutdown_timeout: float = 5.0,
        sessions: Any = None,
        name: str = "aiotp",
        clock: Clock | None = None,
    ) -> None:
        if shutdown_timeout <= 0:
            raise ValueError(f"shutdown_timeout must be positive, got {shutdown_timeout!r}")
        if not isinstance(name, str) or not name:
            raise TypeError(f"Runtime name must be a non-empty string, got {name!r}")
        # Names the system to the outside: the Ray namespace of its workers, the snapshot,
        # the metrics' labels. Runtimes sharing a name share those.
        self.name = name
        self.shutdown_timeout = shutdown_timeout
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must be an aiotp.VirtualClock or a RealClock, got {clock!r}")
        # What timers, restart windows, session TTLs and heartbeats read time from (clock.py).
        self._clock: Clock = clock if clock is not None else RealClock()
        # send_after's scheduler. On real time it becomes the loop's own call_later at enter,
        # so the real clock costs no extra call on the hot path.
        self._call_later: Callable[..., Any] = self._clock.call_later
        self._state = _State.NEW
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set on enter
        self._ids = itertools.count(1)
        self._actors: dict[ActorRef, None] = {}  # insertion-ordered: start order
        self._registry = Registry()
        self._signals = Signals(self)
        self._extensions: dict[str, Any] = {}
        self._jobs: Jobs | None = None
        # Set once shutdown has finished: a second `shutdown()` (or one racing a cancelled
        # first) waits on it instead of returning while actors are still alive.
        self._stopped: asyncio.Event | None = None
        self._started_at: float | None = None  # loop time at enter: the snapshot's uptime
        if sessions is not None:
            from aiotp.session_store.runtime_store import KEY, SessionsExtension

            self._extensions[KEY] = SessionsExtension(sessions, self)

    def _move(self, new: _State) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise AiotpError(f"runtime cannot go from {self._state.name} to {new.name}")
        self._state = new

    def __repr__(self) -> str:
        return f"<Runtime {self._state.name} actors={len(self._actors)}>"

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def clock(self) -> Clock:
        """The time `send_after`, restart intensity, session TTLs and heartbeats run on: a
        `RealClock` unless ``Runtime(clock=aiotp.VirtualClock())`` (`aiotp.runtime.clock`)."""
        return self._clock

    async def __aenter__(self) -> Runtime:
        self._loop = asyncio.get_running_loop()
        if not self._clock.virtual:
            self._call_later = self._loop.call_later
        self._started_at = self._loop.time()
        self._jobs = Jobs(f"runtime {id(self):#x}", close_timeout=self.shutdown_timeout)
        self._stopped = asyncio.Event()
        self._move(_State.RUNNING)
        for ext in list(self._extensions.values()):
            start = getattr(ext, "start", None)
            if start is not None:
                await start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def jobs(self) -> Jobs:
        """The runtime's background jobs (`aiotp.runtime.jobs`): tracked, reported, closed at
        shutdown."""
        if self._jobs is None:
            raise RuntimeClosed("the runtime has not started: it has no job scheduler yet")
        return self._jobs

    def _check_open(self, what: str) -> None:
        if self._state is not _State.RUNNING:
            raise RuntimeClosed(f"{what}: the runtime is {self._state.name}")

    # -- actors ------------------------------------------------------------------------
    # Typed per kind of actor, for mypy and pyright alike: a supervisor's ref has its
    # operations (``which_children()``...), any other actor's is an `ActorRef`.
    @overload
    async def spawn(
        self,
        cls: type[SupervisorCore],
        *args: Any,
        name: Any = None,
        link: bool = False,
        max_mailbox: int | None = None,
        init_timeout: float | None = None,
        **kwargs: Any,
    ) -> SupervisorRef: ...

    @overload
    async def spawn(
        self,
        cls: type[Actor],
        *args: Any,
        name: Any = None,
        link: bool = False,
        max_mailbox: int | None = None,
        init_timeout: float | None = None,
        **kwargs: Any,
    ) -> ActorRef: ...

    async def spawn(
        self,
        cls: type[Actor],
        *args: Any,
        name: Any = None,
        link: bool = False,
        max_mailbox: int | None = None,
        init_timeout: float | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Start an actor and return its ref once `init` finished.

        `link=True` links the new actor to the calling actor (an error outside actors: there is
        nobody to link to). `name` registers it (`NameTaken` if held). `max_mailbox` bounds its
        mailbox. `init_timeout` kills an actor whose init takes longer and raises `CallTimeout`.
        """
        if self._state is not _State.RUNNING and not (
            self._state is _State.STOPPING and _current.get() is not None
        ):
            # While stopping, actors still running may start children (a supervisor restarts
            # a crashed child until its own turn to stop comes, as in OTP); new roots may not.
            self._check_open(f"spawn {getattr(cls, '__name__', cls)!r}")
        if not (isinstance(cls, type) and issubclass(cls, Actor)):
            raise TypeError(f"spawn needs an aiotp.Actor subclass, got {cls!r}")
        if max_mailbox is not None and (not isinstance(max_mailbox, int) or max_mailbox < 1):
            raise ValueError(f"max_mailbox must be a positive int or None, got {max_mailbox!r}")
        if init_timeout is not None and init_timeout <= 0:
            raise ValueError(f"init_timeout must be positive or None, got {init_timeout!r}")
        parent = _current.get()
        if link and parent is None:
            raise AiotpError("spawn(link=True) outside an actor: there is no actor to link to")
        if name is not None:
            self._registry.check_name(name)
            if self._registry.whereis(name) is not None:
                self._registry.register(name, None)  # type: ignore[arg-type]  # raises NameTaken
        ref = cls.ref_class(self, next(self._ids), name, max_mailbox, parent if link else None)
        actor = cls()
        actor.ref = ref
        actor.runtime = self
        ref._actor = actor
        ref._kind = cls
        if name is not None:
            self._registry.register(name, ref)
        if link and parent is not None:
            self._signals.link(parent, ref)
        self._actors[ref] = None
        started: asyncio.Future[None] = self._loop.create_future()
        ref._task = self._loop.create_task(actor_main(ref, args, kwargs, started))
        if telemetry._handlers:
            telemetry.execute(
                ("aiotp", "actor", "spawned"), {"count": 1}, {"actor": ref, "class": cls.__name__}
            )
        try:
            if init_timeout is None:
                await started
            else:
                await asyncio.wait_for(asyncio.shield(started), init_timeout)
        except TimeoutError:
            await self._abort_spawn(ref, started)
            raise CallTimeout(
                f"init of {cls.__name__} did not finish within {init_timeout} s; killed it"
            ) from None
        except asyncio.CancelledError:
            # The spawner gave up: the actor must not live on holding its name, even if its
            # init finished just now (the spawner will never see its ref).
            await self._abort_spawn(ref, started)
            raise
        return ref

    async def _abort_spawn(self, ref: ActorRef, started: asyncio.Future[None]) -> None:
        """Kill an actor whose spawn was abandoned and wait, through cancellation, until it is
        gone (its name freed, its init-time links signalled)."""
        # Nobody will read the outcome of its init now: retrieve it so asyncio does not log
        # "Future exception was never retrieved".
        started.add_done_callback(retrieve)
        self._signals.exit(ref, "kill", None)
        await await_through_cancel(ref._task, self.shutdown_timeout)

    def _forget(self, ref: ActorRef) -> None:
        self._actors.pop(ref, None)
        if ref.name is not None:
            self._registry.unregister(ref.name, ref)

    def resolve(self, target: Target) -> ActorRef:
        """The live ref for a ref or a registered name; `NoProc` if there is none."""
        if isinstance(target, ActorRef):
            return target
        ref = self._registry.whereis(target)
        if ref is None:
            raise NoProc(f"no actor is registered as {target!r}")
        return ref

    def whereis(self, name: Any) -> ActorRef | None:
        return self._registry.whereis(name)

    def registered(self) -> list[Any]:
        return self._registry.names()

    def actors(self) -> list[ActorRef]:
        """Live actors in start order."""
        return list(self._actors)

    async def call(self, target: Target, msg: Any, timeout: float | None = 5.0) -> Any:
        return await self.resolve(target).call(msg, timeout=timeout)

    def cast(self, target: Target, msg: Any) -> Awaitable[None]:
        """Cast by ref or name; to an unknown name or a dead actor it is dropped, as in OTP.
        Queued at once, when called (see `ActorRef.cast`): awaiting it is optional."""
        ref = self._registry.whereis(target) if not isinstance(target, ActorRef) else target
        if ref is not None:
            ref._put((0, msg))
        return DONE

    def send(self, target: Target, msg: Any) -> None:
        ref = self._registry.whereis(target) if not isinstance(target, ActorRef) else target
        if ref is not None:
            ref.send(msg)

    def send_after(self, target: ActorRef, seconds: float, msg: Any) -> Timer:
        """Deliver `msg` to `target`'s handle_info after `seconds` (cancellable). ValueError
        for a negative or non-finite delay (NaN would freeze a virtual clock's time), TypeError
        for one that is not a number."""
        try:
            ok = 0 <= seconds < math.inf  # one chained comparison: False for NaN too
        except TypeError:
            msg_ = f"send_after delay must be a number of seconds, got {seconds!r}"
            raise TypeError(msg_) from None
        if not ok:
            raise ValueError(f"send_after delay must be finite and >= 0, got {seconds!r}")
        timer = Timer(target)
        if target._phase is Phase.DEAD:
            timer.fired = True
            return timer
        timer._handle = self._call_later(seconds, timer._fire, msg)
        if target._timers is None:
            target._timers = set()
        target._timers.add(timer)
        return timer

    def exit(self, target: Target, reason: Any) -> None:
        """Send an exit signal (trappable, except "kill"); a no-op on a dead actor."""
        ref = self.resolve(target) if not isinstance(target, ActorRef) else target
        self._signals.exit(ref, reason, _current.get())

    async def stop(
        self, target: Target, reason: Any = "normal", timeout: float | None = None
    ) -> None:
        """Stop an actor gracefully and return once it is gone (GenServer.stop).

        `NoProc` if it is not alive; `CallTimeout` if it is still alive after `timeout` (it keeps
        running: kill it with ``rt.exit(ref, "kill")`` if you must).
        """
        ref = self.resolve(target)
        if ref._phase is Phase.DEAD:
            raise NoProc(f"stop {ref!r}: the actor is not alive")
        if ref is _current.get():
            raise AiotpError(
                f"{ref!r} cannot rt.stop itself (it would wait forever); use self.stop"
            )
        ref._put((STOP, reason), force=True)
        await self._wait_gone(ref, timeout)

    async def wait_exit(self, target: Target, timeout: float | None = None) -> Any:
        """Wait until the actor has exited and return its exit reason (what a monitor's `Down`
        carries), for code that runs outside any actor (an application's runner, a test).

        Returns at once for an actor already dead; `CallTimeout` after `timeout`; cancelling
        the wait leaves the actor alone.
        """
        ref = self.resolve(target) if not isinstance(target, ActorRef) else target
        await self._wait_gone(ref, timeout)
        return ref._reason

    async def _wait_gone(self, ref: ActorRef, timeout: float | None) -> None:
        task = ref._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            raise CallTimeout(f"{ref!r} did not stop within {timeout} s")

    async def stop_or_kill(self, ref: ActorRef, reason: Any, timeout: float | None) -> Any:
        """Stop, and kill if `terminate` takes longer than `timeout`; returns the exit reason."""
        if ref._phase is Phase.DEAD:
            return ref._reason
        ref._put((STOP, reason), force=True)
        try:
            await self._wait_gone(ref, timeout)
        except CallTimeout:
            self._signals.exit(ref, "kill", None)
            await self._wait_gone(ref, None)
        return ref._reason

    # -- extensions (pools, session store) ----------------------------------------------
    def extension(self, key: str, factory: Callable[[Runtime], T]) -> T:
        """The runtime's instance of an add-on (created on first use, closed at shutdown)."""
        ext = self._extensions.get(key)
        if ext is None:
            ext = factory(self)
            self._extensions[key] = ext
        return ext

    # -- pools and sessions: forwards to aiotp.workers / aiotp.session_store ------------------
    # Imported on first use: the actor core never loads the upper layers unless they are used.
    @property
    def sessions(self) -> SessionStore:
        """The runtime's default `SessionStore`, swept in the background while the runtime runs."""
        from aiotp.session_store.runtime_store import runtime_sessions

        return runtime_sessions(self)

    async def start_pool(
        self, name: str, adapter: Any, **options: Unpack[PoolOptions]
    ) -> SupervisorRef:
        """Start a named pool of workers; see `aiotp.workers.pool` for every option."""
        self._check_open(f"start_pool {name!r}")
        ref: SupervisorRef = await _pools().start_pool(self, name, adapter, **options)
        return ref

    async def stop_pool(self, name: str, timeout: float | None = None) -> None:
        await _pools().stop_pool(self, name, timeout)

    def pool_stats(self, name: str) -> PoolStats:
        stats: PoolStats = _pools().pool_stats(self, name)
        return stats

    def snapshot(self, *, max_children: int | None = None) -> Snapshot:
        """A JSON-ready picture of the system now: tree, pools, sessions (`aiotp.ops.snapshot`).

        A convenience, like `start_pool`: the code lives in the ops layer, which reads every
        layer below; this forwards to it so that ``rt.snapshot()`` is where users look first.
        Safe at any moment on the runtime's loop, during start-up and shutdown included.
        """
        from aiotp.ops.snapshot import snapshot

        return snapshot(self, max_children=max_children)

    def execute(
        self,
        pool: str,
        tool: str,
        args: dict[str, Any] | None = None,
        timeout: float | None = 5.0,
        session: str | None = None,
        *,
        affinity: Affinity | None = None,
        retry: Retry | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Run `tool(**args)` on a worker of `pool` and return its result (aiotp.workers.api).

        ``affinity`` ("hint", "strict_queue", "strict_fail_fast") and ``retry`` (an
        `aiotp.Retry`) override the pool's own for this call. A plain method returning the
        coroutine: one coroutine frame less on the hot path.
        """
        coro: Coroutine[Any, Any, Any] = _pools().execute(
            self, pool, tool, args, timeout, session, affinity=affinity, retry=retry
        )
        return coro

    def stream(
        self,
        pool: str,
        tool: str,
        args: dict[str, Any] | None = None,
        timeout: float | None = 5.0,
        session: str | None = None,
        *,
        affinity: Affinity | None = None,
    ) -> AsyncIterator[Any]:
        """The items of a generator tool, as an async iterator."""
        items: AsyncIterator[Any] = _pools().stream(
            self, pool, tool, args, timeout, session, affinity=affinity
        )
        return items

    @staticmethod
    def run(
        main: Callable[[Runtime], Awaitable[T]] | Awaitable[T],
        *,
        uvloop: bool | None = None,
        **runtime_options: Any,
    ) -> T:
        """`aiotp.run` as a method: ``aiotp.Runtime.run(main)``."""
        from aiotp.runtime.entry import run

        return run(main, uvloop=uvloop, **runtime_options)

    # -- shutdown ----------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop everything (see the module docstring and `aiotp.runtime.shutdown`); idempotent
        and safe to cancel."""
        from aiotp.runtime.shutdown import shutdown

        await shutdown(self)


_pools_module: Any = None


def _pools() -> Any:
    """aiotp.workers.api, imported once on first use (the hot path pays one global lookup)."""
    global _pools_module
    if _pools_module is None:
        from aiotp.workers import api

        _pools_module = api
    return _pools_module
