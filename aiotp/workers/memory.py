"""Recycling on memory: a process worker whose resident set outgrows ``max_memory_mb`` is
replaced gracefully before the kernel's OOM killer takes it down with every request it holds.

What it guarantees: each process worker of a pool with ``max_memory_mb`` is sampled by its own
worker actor every heartbeat ``interval`` (every `SAMPLE_EVERY` = 2 s with ``heartbeat=None``:
often enough to catch a leak, cheap enough to never show: one read of ``/proc/<pid>/statm``, no
psutil). The first sample past the limit logs one WARNING naming pool, worker, pid, resident
size and limit, emits ``("aiotp", "pool", "worker", "memory_exceeded")``, and recycles the
worker like ``ttl`` does: its replacement starts first, then it retires once its in-flight
requests are done. No request fails because of it.

What it is not: a hard cap. A tool that allocates faster than the sampling interval can still
be OOM-killed (the pool then replaces the worker as after any crash), and the resident set
counts pages shared with the pool's template process. It does not apply to thread workers,
which share the pool's own process (`PoolConfig` refuses the combination).

    await rt.start_pool("ml", MLAdapter, profile="process", max_memory_mb=2048)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aiotp.runtime import telemetry

if TYPE_CHECKING:
    from aiotp.workers.config import PoolConfig
    from aiotp.workers.dispatcher import WorkerSlot
    from aiotp.workers.pool import Pool

__all__ = ["SAMPLE_EVERY", "exceeded", "resident_mb", "sample_interval"]

SAMPLE_EVERY = 2.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def sample_interval(config: PoolConfig) -> float:
    """Seconds between two samples: the heartbeat's interval (memory is sampled at its pace)."""
    return config.heartbeat.interval if config.heartbeat is not None else SAMPLE_EVERY


def resident_mb(pid: int) -> float | None:
    """The resident set size of process `pid` in MiB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            fields = statm.read().split()
    except OSError:
        return None
    return int(fields[1]) * _PAGE / (1024 * 1024)


def exceeded(pool: Pool, slot: WorkerSlot) -> bool:
    """Sample `slot`'s worker; past the pool's limit, report it, recycle it and return True."""
    limit = pool.config.max_memory_mb
    pid = slot.handle.pid
    if limit is None or pid is None or slot.handle.closed.done():
        return False  # a closed handle's pid may belong to another process by now
    rss = resident_mb(pid)
    if rss is None or rss <= limit:
        return False
    pool.log.warning(
        "pool %r: worker %s (pid %s) uses %.1f MB, past max_memory_mb=%s; recycling it",
        pool.name,
        slot.worker_id,
        pid,
        rss,
        limit,
    )
    telemetry.execute(
        ("aiotp", "pool", "worker", "memory_exceeded"),
        {"rss_mb": rss, "limit_mb": limit},
        {"pool": pool.name, "worker_id": slot.worker_id, "pid": pid},
    )
    pool.recycle(slot, "memory")
    return True
