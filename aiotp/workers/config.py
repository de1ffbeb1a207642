"""Pool settings, validated once when a pool is declared, never at restart time.

Defaults and why:
- ``threads_per_worker=1``: one request at a time per worker is the safe default for adapters that
  were not written for threads (the same reason OTP pools default to one job per worker).
- ``Heartbeat(interval=2.0, timeout=10.0, max_missed=3)``: a ping every 2 s, a pong later than
  10 s is a miss, 3 misses replace the worker; a hung worker is caught within about
  ``interval * max_missed + timeout`` seconds without killing workers that are merely slow.
- ``Heartbeat(dependent=True)``: a worker that misses ``max_missed`` heartbeats is killed and
  replaced (OTP's link: the pool depends on its workers answering). ``dependent=False`` only
  reports it (one WARNING, then one INFO when it answers again) and keeps it serving: for
  tools that legitimately hold every thread of a worker for longer than the timeout.
- ``checkout_timeout=5.0``: as long as a GenServer call timeout; a caller waiting longer for a free
  worker is better told `CheckoutTimeout` than left hanging.
- ``max_queue=1000``: callers queue when every worker is busy, but not without limit: past it
  `PoolBusy` tells them at once (load shedding beats unbounded latency).
- ``startup_batch=8``: workers start 8 at a time, so 32 workers start in 4 rounds without forking
  32 processes at once on a small machine.
- ``max_frame=64 MiB``: the largest message either side accepts; a worker sending more is killed
  as a protocol breaker, a caller sending more gets `SerializationError`.
- ``pipeline=1``: requests a process worker may hold beyond the ones it runs (queued in its
  socket, so it never idles between two requests). Raising it (8-16) multiplies throughput under
  load several times; the price is head-of-line blocking behind a slow request and more requests
  failing with `WorkerCrashed` when that worker dies. 1 keeps every waiting request in the
  pool's own queue, free to go to whichever worker frees up first.
- ``preload=True``: process workers are forked from a template process that imported the
  adapter's module once (about 2 ms a worker instead of 50+); False starts each one afresh.
  The first worker starts afresh either way, and the template only once a second is needed,
  so a pool of one runs no template.
- ``shutdown=5.0``: seconds a worker gets to finish in-flight requests when stopped.
- ``cancel_grace=2.0`` and ``overrun="recycle"``: when a caller leaves (timeout, cancellation)
  while its tool still runs, the worker is told to give up (an async tool is cancelled, a
  request not started is skipped) and its slot stays busy until the tool really ends. A tool
  still running ``cancel_grace`` seconds later is an overrun: ``"recycle"`` starts a
  replacement and kills the worker (as Snakepit and gunicorn kill a worker that overruns its
  timeout: a sync tool cannot be interrupted otherwise); ``"wait"`` lets it finish.
- ``affinity="hint"``: a session's requests prefer the worker it is pinned to, and go elsewhere
  when that worker is busy or gone (nothing waits for a particular worker). ``"strict_queue"``
  waits for the session's own worker (bounded by ``checkout_timeout``) and ``"strict_fail_fast"``
  raises `WorkerBusy` at once when it is busy: the modes for tools that keep per-session state
  in the worker. Also settable per call.
- ``retry=None``: no retries. An `aiotp.Retry` retries idempotent tools after `WorkerCrashed`
  (see retry.py); a request that never reached a worker is dispatched again regardless.
- ``max_requests=None``: when set, a bound: a worker starts at most that many requests; its
  replacement is started once it has started 80% of them, so capacity does not dip.
- ``max_restarts=None`` (10 per worker) in ``max_seconds=5.0``: pools expect a worker to die now
  and then (OOM, a segfaulting library, a kill by the heartbeat), so their intensity is higher
  than a supervisor's default of 3; a pool whose workers crash faster still escalates.
- ``max_memory_mb=None``: no memory limit. When set (process workers only: a thread worker
  shares the pool's process, whose memory is not its own), each worker's resident set size is
  read from ``/proc/<pid>/statm`` at every heartbeat interval (every 2 s with
  ``heartbeat=None``), and a worker past the limit is recycled gracefully, like ``ttl``. A leak
  thus costs a restart, not an OOM kill that fails every request the worker held.
- ``ray_options=None``, ``address=None`` (``profile="ray"`` only, see ray_start.py and
  ray_connect.py): Ray's defaults for each actor, and a local loopback Ray started on first use
  unless Ray is initialised already. Only `RAY_OPTIONS` keys are accepted: actor names,
  namespaces and restarts are aiotp's (restarts off in Ray, so supervision is the pool's).
  ``pipeline`` applies to Ray workers as to process workers (requests queued in the actor).
- Recycling (``ttl``, ``max_requests``, ``max_memory_mb``) whose replacement fails to start is
  retried after 1 s, doubling up to 30 s (or ``ttl`` when shorter); the old worker keeps
  serving meanwhile (up to its ``max_requests`` bound), so a flaky start costs no capacity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Heartbeat", "PoolConfig"]

PROFILES = ("thread", "process", "ray")
#: ``ray_options`` keys passed to Ray's ``.options()`` (names, namespaces and restarts are aiotp's).
RAY_OPTIONS = (
    "num_cpus",
    "num_gpus",
    "memory",
    "resources",
    "accelerator_type",
    "runtime_env",
    "scheduling_strategy",
)
OVERRUN_POLICIES = ("recycle", "wait")
AFFINITY_MODES = ("hint", "strict_queue", "strict_fail_fast")


def check_affinity(value: Any) -> str:
    """The affinity mode, or a ValueError naming the modes (pool option and per call)."""
    if value not in AFFINITY_MODES:
        raise ValueError(f"affinity must be one of {AFFINITY_MODES}, got {value!r}")
    return str(value)


def check_retry(value: Any) -> Any:
    from aiotp.workers.retry import Retry

    if value is not None and not isinstance(value, Retry):
        raise TypeError(f"retry must be an aiotp.Retry or None, got {value!r}")
    return value


def _positive(name: str) -> Any:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")

    return check


def _positive_int(name: str, optional: bool = False) -> Any:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if optional and value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")

    return check


@attrs.frozen
class Heartbeat:
    """How a pool watches its workers: ping every `interval`, a pong later than `timeout` is a
    miss, `max_missed` misses in a row kill the worker (its supervisor starts a new one), or,
    with ``dependent=False``, only report it as unhealthy until it answers again."""

    interval: float = attrs.field(default=2.0, validator=_positive("Heartbeat.interval"))
    timeout: float = attrs.field(default=10.0, validator=_positive("Heartbeat.timeout"))
    max_missed: int = attrs.field(default=3, validator=_positive_int("Heartbeat.max_missed"))
    dependent: bool = attrs.field(default=True)

    @dependent.validator
    def _check_dependent(self, _attr: Any, value: Any) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"Heartbeat.dependent must be a bool, got {value!r}")


@attrs.frozen
class PoolConfig:
    """Everything `start_pool` accepts, checked at construction (a bad value names its field)."""

    name: str = attrs.field()
    adapter: Any = attrs.field()
    profile: str = attrs.field(default="thread")
    size: int = attrs.field(default=4, validator=_positive_int("size"))
    threads_per_worker: int = attrs.field(default=1, validator=_positive_int("threads_per_worker"))
    heartbeat: Heartbeat | None = attrs.field(factory=Heartbeat)
    max_requests: int | None = attrs.field(
        default=None, validator=_positive_int("max_requests", optional=True)
    )
    ttl: float | None = attrs.field(default=None)
    checkout_timeout: float = attrs.field(default=5.0, validator=_positive("checkout_timeout"))
    max_queue: int = attrs.field(default=1000)
    startup_batch: int = attrs.field(default=8, validator=_positive_int("startup_batch"))
    env: Mapping[str, str] | None = attrs.field(default=None)
    shutdown: float = attrs.field(default=5.0, validator=_positive("shutdown"))
    max_restarts: int | None = attrs.field(default=None)
    max_seconds: float = attrs.field(default=5.0, validator=_positive("max_seconds"))
    start_timeout: float = attrs.field(default=30.0, validator=_positive("start_timeout"))
    max_frame: int = attrs.field(default=64 * 1024 * 1024, validator=_positive_int("max_frame"))
    pipeline: int = attrs.field(default=1, validator=_positive_int("pipeline"))
    preload: bool = attrs.field(default=True)
    cancel_grace: float = attrs.field(default=2.0, validator=_positive("cancel_grace"))
    overrun: str = attrs.field(default="recycle")
    max_memory_mb: float | None = attrs.field(default=None)
    affinity: str = attrs.field(default="hint")
    retry: Any = attrs.field(default=None)
    ray_options: Mapping[str, Any] | None = attrs.field(default=None)
    address: str | None = attrs.field(default=None)

    @ray_options.validator
    def _check_ray_options(self, _attr: Any, value: Any) -> None:
        if value is not None:
            _ray_only(self.profile, "ray_options")
            check_ray_options(value)

    @address.validator
    def _check_address(self, _attr: Any, value: Any) -> None:
        if value is not None:
            _ray_only(self.profile, "address")
            if not isinstance(value, str) or not value:
                raise TypeError(f"address must be a Ray address string or None, got {value!r}")

    @affinity.validator
    def _check_affinity(self, _attr: Any, value: Any) -> None:
        check_affinity(value)

    @retry.validator
    def _check_retry(self, _attr: Any, value: Any) -> None:
        check_retry(value)

    @max_memory_mb.validator
    def _check_max_memory_mb(self, _attr: Any, value: Any) -> None:
        if value is None:
            return
        _positive("max_memory_mb")(self, _attr, value)
        if self.profile == "thread":
            raise ValueError(
                "max_memory_mb applies to profile='process' only: a thread worker shares the "
                "pool's process and its memory, so no worker's own memory can be measured or "
                "reclaimed by recycling it"
            )
        if self.profile == "ray":
            raise ValueError(
                "max_memory_mb applies to profile='process' only: a Ray worker may run on "
                "another machine; give it ray_options={'memory': bytes} and let Ray's memory "
                "monitor watch it"
            )

    @overrun.validator
    def _check_overrun(self, _attr: Any, value: Any) -> None:
        if value not in OVERRUN_POLICIES:
            raise ValueError(f"overrun must be one of {OVERRUN_POLICIES}, got {value!r}")

    @name.validator
    def _check_name(self, _attr: Any, value: Any) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"pool name must be a non-empty string, got {value!r}")

    @profile.validator
    def _check_profile(self, _attr: Any, value: Any) -> None:
        if value not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {value!r}")
        if value == "process":
            from aiotp.workers.platform import check_process_profile

            check_process_profile()  # UnsupportedPlatform now, not after a child started
        elif value == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:  # found, not imported
                from aiotp.workers.errors import UnsupportedPlatform

                raise UnsupportedPlatform(
                    "profile='ray' needs Ray, which is not installed: pip install 'aiotp[ray]'"
                )

    @heartbeat.validator
    def _check_heartbeat(self, _attr: Any, value: Any) -> None:
        if value is not None and not isinstance(value, Heartbeat):
            raise TypeError(f"heartbeat must be an aiotp.Heartbeat or None, got {value!r}")

    @ttl.validator
    def _check_ttl(self, _attr: Any, value: Any) -> None:
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise ValueError(f"ttl must be a positive number of seconds or None, got {value!r}")

    @max_restarts.validator
    def _check_max_restarts(self, _attr: Any, value: Any) -> None:
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"max_restarts must be an int >= 0 or None, got {value!r}")

    @property
    def worker_restarts(self) -> int:
        """Restart intensity of the workers' supervisor: 10 per worker unless given."""
        return self.max_restarts if self.max_restarts is not None else 10 * self.size

    @max_queue.validator
    def _check_max_queue(self, _attr: Any, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"max_queue must be an int >= 0, got {value!r}")

    @env.validator
    def _check_env(self, _attr: Any, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise TypeError(f"env must map str to str, got {value!r}")
        for key, item in value.items():
            if not key or "=" in key or "\0" in key or "\0" in item:
                raise ValueError(f"env entry {key!r}={item!r} cannot be put in an environment")


def _ray_only(profile: str, name: str) -> None:
    if profile != "ray":
        raise ValueError(f"{name} applies to profile='ray' only, not to profile={profile!r}")


def _non_negative(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def check_ray_options(value: Any) -> None:
    """``ray_options``: a mapping of `RAY_OPTIONS` keys with values of the right kind (Ray
    checks the rest when the first worker starts)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"ray_options must be a mapping, got {value!r}")
    for key, item in value.items():
        if key not in RAY_OPTIONS:
            raise ValueError(
                f"ray_options key {key!r} is not accepted (accepted: {', '.join(RAY_OPTIONS)}; "
                "names, namespaces and restarts are aiotp's own)"
            )
        if key in ("num_cpus", "num_gpus", "memory"):
            _non_negative(f"ray_options[{key!r}]", item)
        elif key == "resources":
            if not isinstance(item, Mapping) or not all(isinstance(k, str) for k in item):
                raise TypeError(f"ray_options['resources'] must map str to numbers, got {item!r}")
            for name, amount in item.items():
                _non_negative(f"ray_options['resources'][{name!r}]", amount)
        elif key == "runtime_env" and not isinstance(item, Mapping):
            raise TypeError(f"ray_options['runtime_env'] must be a mapping, got {item!r}")
        elif key == "accelerator_type" and not isinstance(item, str):
            raise TypeError(f"ray_options['accelerator_type'] must be a str, got {item!r}")
        elif key == "scheduling_strategy" and item is None:
            raise TypeError("ray_options['scheduling_strategy'] must not be None")
