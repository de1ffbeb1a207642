"""The runtime's connection to Ray (``profile="ray"``): join a cluster or start a local Ray.

`RayConnection` is a runtime extension (``"aiotp.ray"``), made by the first Ray worker start:

- Ray already initialised in this process (by you, before the pool starts): pools use it as it
  is, and aiotp never shuts it down.
- ``address=`` given (``"host:port"`` of the head's GCS, or ``"auto"``): ``ray.init(address=...)``
  joins that cluster.
- Neither: a local Ray is started, bound to 127.0.0.1, with this machine's CPU count and no
  dashboard (``log_to_driver=False``: workers' output stays in Ray's log files).

Ray is one per process, so a process is connected to one cluster: a pool whose ``address=``
names another than the one this process is connected to fails to start (`WorkerStartError`
naming both) rather than running its workers on the wrong cluster. The connection's address
is the one aiotp's ``ray.init`` was given (``"local"`` for a local start), and for any
connection its GCS address (``"host:port"``, which a pool may name too); for a Ray you
initialised yourself, only its GCS address (or ``"auto"``, which cannot be checked). A pool
with ``address=None`` uses whatever connection exists.

The runtimes of one process share it: the last runtime using a Ray
that aiotp initialised closes it (``ray.shutdown()``) when it stops, which also ends a local Ray
it started. Each runtime joins in its namespace (`Runtime.name`).

``ray.init`` can block for a long time (an unreachable address: minutes), so it runs off the
loop, on one daemon thread kept for the process's life (see `_jobs` for why), and a worker
start waits for it at most ``start_timeout``, then fails with a typed error; a later start
waits for the same attempt rather than starting a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ray

if TYPE_CHECKING:
    from aiotp.runtime.runtime import Runtime

__all__ = ["KEY", "RayConnection", "ray_connection"]

KEY = "aiotp.ray"

# Ray is one per process: whether aiotp initialised it, and how many runtimes use that.
_guard = threading.Lock()
_ours = False
_users = 0
_address: str | None = None  # what aiotp's ray.init was given ("local": a local start)
LOCAL = "local"


class RayConnection:
    """A runtime's use of Ray (see the module docstring); closed with the runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.joined = False
        self.owner = False  # this runtime counts among the users of a Ray aiotp initialised
        self._closed = False
        self._joining: asyncio.Future[None] | None = None
        # The connection's address (see the module docstring): what aiotp's ray.init was
        # given, None for a Ray initialised outside aiotp; and its GCS address.
        self.address: str | None = None
        self.gcs: str | None = None

    async def ensure(self, address: str | None, timeout: float) -> None:
        """Connected, joining `address` or starting a local Ray when Ray is not initialised;
        `TimeoutError` after `timeout` s (the attempt goes on; the next call waits for it);
        `ConnectionError` when connected to a cluster other than `address`."""
        if not self.joined:
            await self._connect(address, timeout)
        if not self.serves(address):
            raise ConnectionError(
                f"this process is connected to Ray at {self.describe()}, not at {address!r} "
                "(Ray is one per process: one cluster for every pool)"
            )

    def serves(self, address: str | None) -> bool:
        """Whether a pool asking for `address` may use this connection."""
        if address is None or address == self.gcs:
            return True
        if self.address is None:  # initialised outside aiotp: "auto" is theirs to mean
            return address == "auto"
        return address == self.address

    def describe(self) -> str:
        gcs = f"GCS {self.gcs}" if self.gcs else "GCS unknown"
        if self.address is None:
            return f"{gcs} (initialised outside aiotp)"
        if self.address == LOCAL:
            return f"{gcs} (a local Ray aiotp started)"
        return f"{self.address!r} ({gcs})"

    async def _connect(self, address: str | None, timeout: float) -> None:
        if self._joining is None or (self._joining.done() and self._joining.exception()):
            self._joining = in_thread(lambda: self._join(address))
        try:
            await asyncio.wait_for(asyncio.shield(self._joining), timeout)
        except TimeoutError:
            raise TimeoutError(f"Ray did not connect within {timeout} s") from None
        self.joined = True

    def _join(self, address: str | None) -> None:
        global _ours, _users, _address
        with _guard:
            if ray.is_initialized():
                if _ours:
                    _users += 1
                    self.owner = True
            else:
                ray.init(**self._options(address))
                _ours, _users, _address = True, _users + 1, address or LOCAL
                self.owner = True
            self.address = _address if _ours else None
            self.gcs = _gcs_address()
        if self._closed:  # the runtime stopped while we connected: let go at once
            self._let_go()

    def _options(self, address: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {"log_to_driver": False, "namespace": self.rt.name}
        if address is not None:
            options["address"] = address
            return options
        # A local Ray on loopback only: nothing of it listens beyond this machine. Ray decides
        # with a switch it reads from the environment when it is imported (without it, its GCS
        # listened on every interface and `_node_ip_address` was ignored): set it for the
        # processes Ray starts, and in this process, which imported Ray already. Only for a
        # local start: a driver joining a remote cluster must advertise its real address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        _loopback_only()
        options.update(
            num_cpus=os.cpu_count() or 1, include_dashboard=False, _node_ip_address="127.0.0.1"
        )
        return options

    def _let_go(self) -> None:
        global _ours, _users
        with _guard:
            if not self.owner:
                return
            self.owner = False
            _users -= 1
            if _users == 0 and _ours:
                _ours = False
                ray.shutdown()

    async def close(self) -> None:
        self._closed = True
        if self.owner:
            await in_thread(self._let_go)


def _gcs_address() -> str | None:
    """The GCS address of this process's Ray connection (None where Ray does not say, e.g. a
    Ray Client connection)."""
    try:
        gcs = ray.get_runtime_context().gcs_address
    except Exception:
        return None
    return gcs if isinstance(gcs, str) else None


def _loopback_only() -> None:
    """Ray's "clusters enabled" switch off in this process (`ray_constants.ENABLE_RAY_CLUSTER`,
    read at call time by `ray._private.services`): node addresses resolve to 127.0.0.1."""
    if os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
        return  # the user asked for a cluster-capable node: theirs to decide
    from ray._private import ray_constants

    if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False):
        ray_constants.ENABLE_RAY_CLUSTER = False


def ray_connection(rt: Runtime) -> RayConnection:
    conn: RayConnection = rt.extension(KEY, RayConnection)
    return conn


def in_thread(fn: Callable[[], None]) -> asyncio.Future[None]:
    """Run `fn` on the Ray thread; a future of the running loop tells how it ended (its outcome
    is read even when nobody awaits it any more: no "never retrieved" noise)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    def settle(exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)

    def run() -> None:
        exc: BaseException | None = None
        try:
            fn()
        except BaseException as error:
            exc = error
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, exc)

    _jobs().put(run)
    return fut


_queue: queue.SimpleQueue[Callable[[], None]] | None = None


def _jobs() -> queue.SimpleQueue[Callable[[], None]]:
    """The queue of the one thread that calls ``ray.init`` and ``ray.shutdown``.

    Why one thread that lives as long as the process: Ray starts its GCS and raylet with a
    parent-death signal, which Linux ties to the *thread* that started them: had a short-lived
    thread called ``ray.init``, the local Ray would be killed the moment that thread ended.
    A daemon, so that a ``ray.init`` stuck on an unreachable address never holds up exit.
    """
    global _queue
    with _guard:
        if _queue is None:
            jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

            def serve() -> None:
                while True:
                    jobs.get()()

            threading.Thread(target=serve, name="aiotp-ray", daemon=True).start()
            _queue = jobs
        return _queue
