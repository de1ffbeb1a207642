"""`ChildSpec`: how a supervisor starts, restarts and stops one child.

::

    aiotp.ChildSpec("counter", Counter, args=(0,), restart="permanent", shutdown=5.0)

Fields and defaults (OTP's):
- ``start``: an `Actor` subclass (spawned linked to the supervisor with ``args``/``kwargs``) or
  an async factory ``await start(*args, **kwargs) -> ActorRef`` (the supervisor links to the
  ref it returns). A factory is how a whole subtree, such as a worker pool, joins a tree.
- ``restart``: ``"permanent"`` (always restarted, the default), ``"transient"`` (restarted unless
  it exits normal, shutdown or ("shutdown", term)), ``"temporary"`` (never restarted).
- ``shutdown``: seconds its `terminate` gets before it is killed (default 5.0 for workers),
  ``"brutal_kill"`` (killed at once) or ``"infinity"`` (waits; the default for supervisors, which
  need the time to stop their own children).
- ``type``: ``"worker"`` or ``"supervisor"``.
- ``name``: a name to register the child under (restarts re-register it).

Every field is checked here, at construction, so that a bad spec fails where it is written and
never at 3 a.m. during a restart.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import attrs

from aiotp.runtime.actor import Actor

__all__ = ["ChildSpec"]

RESTARTS = ("permanent", "transient", "temporary")
TYPES = ("worker", "supervisor")
WORKER_SHUTDOWN = 5.0


def _to_args(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ValueError(f"ChildSpec.args must be a list or tuple, got {value!r}")
    return tuple(value)


def _check_start(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, type):
        if not issubclass(value, Actor):
            raise ValueError(f"ChildSpec.start must be an Actor subclass, got {value!r}")
        return
    if not callable(value):
        raise ValueError(
            f"ChildSpec.start must be an Actor subclass or an async factory, got {value!r}"
        )
    if not (
        inspect.iscoroutinefunction(value)
        or inspect.iscoroutinefunction(
            getattr(value, "__call__", None)  # noqa: B004
        )
    ):
        raise ValueError(f"ChildSpec.start factory must be an async function, got {value!r}")


def _check_id(_inst: Any, _attr: Any, value: Any) -> None:
    try:
        hash(value)
    except TypeError:
        raise ValueError(f"ChildSpec.id must be hashable, got {value!r}") from None
    if value is None:
        raise ValueError("ChildSpec.id must not be None")


def _check_kwargs(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"ChildSpec.kwargs must map str to values, got {value!r}")


@attrs.frozen
class ChildSpec:
    id: Any = attrs.field(validator=_check_id)
    start: Any = attrs.field(validator=_check_start)
    args: tuple[Any, ...] = attrs.field(default=(), converter=_to_args)
    kwargs: Mapping[str, Any] = attrs.field(factory=dict, validator=_check_kwargs)
    restart: str = attrs.field(default="permanent")
    shutdown: float | str | None = attrs.field(default=None)
    type: str = attrs.field(default="worker")
    name: Any = attrs.field(default=None)

    @restart.validator
    def _check_restart(self, _attr: Any, value: Any) -> None:
        if value not in RESTARTS:
            raise ValueError(f"ChildSpec.restart must be one of {RESTARTS}, got {value!r}")

    @type.validator
    def _check_type(self, _attr: Any, value: Any) -> None:
        if value not in TYPES:
            raise ValueError(f"ChildSpec.type must be one of {TYPES}, got {value!r}")

    @shutdown.validator
    def _check_shutdown(self, _attr: Any, value: Any) -> None:
        if value is None or value in ("brutal_kill", "infinity"):
            return
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(
                "ChildSpec.shutdown must be seconds >= 0, 'brutal_kill' or 'infinity', "
                f"got {value!r}"
            )

    @property
    def shutdown_policy(self) -> float | str:
        """The effective shutdown: the default depends on the child's type."""
        if self.shutdown is not None:
            return self.shutdown
        return "infinity" if self.type == "supervisor" else WORKER_SHUTDOWN
