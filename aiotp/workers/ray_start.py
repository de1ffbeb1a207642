"""Starting Ray workers, and the runtime's connection to Ray (``profile="ray"``).

::

    await rt.start_pool("ml", "ml_adapter:MLAdapter", profile="ray", size=4,
                        ray_options={"num_gpus": 1}, address="10.0.0.5:6379")

What runs where: the pool (dispatcher, supervision, heartbeats, sessions) stays in the runtime's
process; each worker is a Ray actor (`RayHost`) hosting the adapter, on whichever node Ray
places it. This module is imported only by pools of that profile: ``import aiotp`` never
imports Ray.

Connecting (`RayConnection`, one per runtime, the ``"aiotp.ray"`` extension):
- Ray already initialised in this process (by you, before the pool starts): pools use it as it
  is, and aiotp never shuts it down.
- ``address=`` given: ``ray.init(address=...)`` joins that cluster.
- Neither: a local Ray is started, bound to 127.0.0.1, with this machine's CPU count and no
  dashboard (``log_to_driver=False``: workers' output stays in Ray's log files).
Ray is process-wide, so the runtimes of one process share one connection: the last runtime
that used a connection aiotp made closes it (``ray.shutdown()``) when it stops, which also ends
a local Ray it started. ``ray.init`` and ``ray.shutdown`` block for seconds: they run in a
thread, not on the loop.

Actors: named after their worker id (``"<pool>-<index>.<generation>.<tag>"``, the id the
session store records for a session's pinned worker) in the Ray namespace named after the
runtime (``Runtime(name=...)``, default "aiotp"), so that any process in that namespace can
find the worker holding a session's state with ``ray.get_actor(worker_id, namespace=...)``.
Ray's own restarts are off (``max_restarts=0``, ``max_task_retries=0``): aiotp's supervisor
restarts workers, within the pool's restart intensity, with the same telemetry as any profile.
``ray_options`` go to ``.options()`` (`RAY_OPTIONS` lists what is accepted); the pool's ``env``
becomes the actor's ``runtime_env["env_vars"]``.

A worker that Ray cannot place (resources no node has) or whose ``setup()`` hangs is killed
after ``start_timeout`` and reported as `WorkerStartError`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ray

from aiotp.workers.errors import WorkerStartError
from aiotp.workers.ray_host import RayHost, concurrency_groups
from aiotp.workers.ray_worker import RayWorker

if TYPE_CHECKING:
    from aiotp.runtime.runtime import Runtime
    from aiotp.workers.pool import Pool

__all__ = ["KEY", "RayConnection", "ray_connection", "start_ray_worker"]

KEY = "aiotp.ray"

# Ray is one per process: whether aiotp initialised it, and how many runtimes use that.
_guard = threading.Lock()
_ours = False
_users = 0


class RayConnection:
    """A runtime's use of Ray (see the module docstring); closed with the runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.joined = False
        self.owner = False  # this runtime counts among the users of a Ray aiotp initialised
        self._lock = asyncio.Lock()

    async def ensure(self, address: str | None) -> None:
        """Connected, joining `address` or starting a local Ray when Ray is not initialised."""
        if self.joined:
            return
        async with self._lock:
            if self.joined:
                return
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._join, address)
            self.joined = True

    def _join(self, address: str | None) -> None:
        global _ours, _users
        with _guard:
            if ray.is_initialized():
                if _ours:
                    _users += 1
                    self.owner = True
                return
            options: dict[str, Any] = {"log_to_driver": False, "namespace": self.rt.name}
            if address is None:
                # A local Ray on loopback only: nothing of it listens beyond this machine. The
                # address is given explicitly (this process read Ray's loopback switch when it
                # imported Ray); the switch is set for the processes Ray starts. Not when
                # joining: a driver on another machine must advertise its real address.
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
                options.update(
                    num_cpus=os.cpu_count() or 1,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                )
            else:
                options["address"] = address
            ray.init(**options)
            _ours, _users = True, _users + 1
            self.owner = True

    async def close(self) -> None:
        if not self.owner:
            return
        self.owner = False
        await asyncio.get_running_loop().run_in_executor(None, _release)


def _release() -> None:
    global _ours, _users
    with _guard:
        _users -= 1
        if _users == 0 and _ours:
            _ours = False
            ray.shutdown()


def ray_connection(rt: Runtime) -> RayConnection:
    conn: RayConnection = rt.extension(KEY, RayConnection)
    return conn


@functools.cache
def _actor_class(threads: int) -> Any:
    """The Ray actor class for a lane of `threads` threads (concurrency groups are fixed per
    class in Ray, so one class per lane size, made once)."""
    make: Any = ray.remote
    return make(concurrency_groups=concurrency_groups(threads))(RayHost)


def actor_options(
    ray_options: Mapping[str, Any] | None, env: Mapping[str, str] | None
) -> dict[str, Any]:
    """What goes to ``.options()`` from the pool's settings (names and restarts are aiotp's)."""
    options = dict(ray_options or {})
    if env:
        runtime_env = dict(options.get("runtime_env") or {})
        runtime_env["env_vars"] = {**dict(runtime_env.get("env_vars") or {}), **env}
        options["runtime_env"] = runtime_env
    return options


async def start_ray_worker(pool: Pool, worker_id: str) -> RayWorker:
    """Create the worker's actor and return its handle once ``setup()`` ran; on any failure the
    actor is killed and `WorkerStartError` names the worker."""
    cfg = pool.config
    try:
        await ray_connection(pool.rt).ensure(cfg.address)
    except Exception as exc:
        raise WorkerStartError(
            f"worker {worker_id}: cannot connect to Ray ({cfg.address or 'local'}): "
            f"{type(exc).__name__}: {exc}",
            worker_id,
        ) from exc
    options = actor_options(cfg.ray_options, cfg.env)
    try:
        actor = (
            _actor_class(cfg.threads_per_worker)
            .options(
                name=worker_id,
                namespace=pool.rt.name,
                max_restarts=0,
                max_task_retries=0,
                **options,
            )
            .remote(cfg.adapter, worker_id, cfg.threads_per_worker, cfg.max_frame)
        )
    except Exception as exc:  # a name taken in the namespace, options Ray refuses
        raise WorkerStartError(
            f"worker {worker_id}: Ray refused to create its actor: {type(exc).__name__}: {exc}",
            worker_id,
        ) from exc
    worker = RayWorker(actor, worker_id, cfg.max_frame)
    try:
        await asyncio.wait_for(worker.start(), cfg.start_timeout)
    except TimeoutError:
        worker.kill()
        raise WorkerStartError(
            f"worker {worker_id} was not ready within start_timeout={cfg.start_timeout} s "
            f"(Ray could not place it with {options or 'default options'}, or setup() hung)",
            worker_id,
        ) from None
    except BaseException:
        worker.kill()
        raise
    return worker
