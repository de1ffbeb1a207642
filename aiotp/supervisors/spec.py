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

Naming, the Elixir way: ``ChildSpec("x", Counter, kwargs={"name": "x"})`` is the same as
``ChildSpec("x", Counter, name="x")``. For an `Actor` subclass, ``kwargs`` are the keyword
arguments of its ``init``, except ``name``: that key is consumed as the registered name and is
not passed on, exactly as ``rt.spawn(Counter, name="x")`` does (the actor reads it back as
``self.ref.name``). For an async factory, ``kwargs`` are passed to the factory unchanged, ``name``
included: the factory does its own registering. Giving both ``name=`` and a ``name`` in
``kwargs`` is refused here with a ValueError, since one of them would be silently ignored.

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

    def __attrs_post_init__(self) -> None:
        if self.name is not None and "name" in self.kwargs:
            raise ValueError(
                f"ChildSpec {self.id!r}: name={self.name!r} and kwargs['name']="
                f"{self.kwargs['name']!r} both given; keep one (name= or kwargs['name'])"
            )

    @property
    def registered_name(self) -> Any:
        """The name an `Actor` child is registered under: ``name=`` or ``kwargs['name']``."""
        return self.name if self.name is not None else self.kwargs.get("name")

    @property
    def init_kwargs(self) -> Mapping[str, Any]:
        """The keyword arguments an `Actor` child's ``init`` gets: ``kwargs`` without ``name``."""
        if "name" not in self.kwargs:
            return self.kwargs
        return {k: v for k, v in self.kwargs.items() if k != "name"}

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
