"""Starting Ray workers (``profile="ray"``): the actor, its options, its handle once ready.

::

    await rt.start_pool("ml", "ml_adapter:MLAdapter", profile="ray", size=4,
                        ray_options={"num_gpus": 1}, address="10.0.0.5:6379")

What runs where: the pool (dispatcher, supervision, heartbeats, sessions) stays in the runtime's
process; each worker is a Ray actor (`RayHost`) hosting the adapter, on whichever node Ray
places it. This module is imported only by pools of that profile: ``import aiotp`` never
imports Ray.

Connecting to Ray (joining ``address=`` or starting a local Ray) is ray_connect.py.

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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ray

from aiotp.workers.errors import WorkerStartError
from aiotp.workers.ray_connect import ray_connection
from aiotp.workers.ray_host import RayHost, concurrency_groups
from aiotp.workers.ray_worker import RayWorker

if TYPE_CHECKING:
    from aiotp.workers.pool import Pool

__all__ = ["actor_options", "start_ray_worker"]


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
        await ray_connection(pool.rt).ensure(cfg.address, cfg.start_timeout)
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
