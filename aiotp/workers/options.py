"""The keyword options of `rt.start_pool` and `aiotp.pool_spec`, as a type.

`PoolConfig` checks every value at run time; this `TypedDict` lets a type checker catch the same
mistakes before: ``rt.start_pool("ml", A, szie=4)`` is an "unexpected keyword" error in mypy
and pyright, and ``size="4"`` a type error. Keep it in step with `PoolConfig` (a test compares
the two field lists).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from aiotp.workers.config import Heartbeat
from aiotp.workers.retry import Retry

__all__ = ["Affinity", "Overrun", "PoolOptions", "Profile"]

Profile = Literal["thread", "process", "ray"]
Affinity = Literal["hint", "strict_queue", "strict_fail_fast"]
Overrun = Literal["recycle", "wait"]


class PoolOptions(TypedDict, total=False):
    """Every option of a pool; see the README's "Pools and workers" for what each does."""

    profile: Profile
    size: int
    threads_per_worker: int
    heartbeat: Heartbeat | None
    max_requests: int | None
    ttl: float | None
    checkout_timeout: float
    max_queue: int
    startup_batch: int
    env: Mapping[str, str] | None
    shutdown: float
    max_restarts: int | None
    max_seconds: float
    start_timeout: float
    max_frame: int
    pipeline: int
    preload: bool
    cancel_grace: float
    overrun: Overrun
    max_memory_mb: float | None
    affinity: Affinity
    retry: Retry | None
    ray_options: Mapping[str, Any] | None
    address: str | None
