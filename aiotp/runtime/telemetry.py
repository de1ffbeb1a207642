"""Telemetry: named events with measurements and metadata, dispatched to attached handlers.

The shape follows Erlang's :telemetry. An event is a tuple of strings such as
``("aiotp", "pool", "worker", "spawned")``; a handler is attached under a unique id to an event
prefix and receives ``(event, measurements, metadata)`` for every event that starts with it::

    from aiotp import telemetry

    def log(event, measurements, metadata):
        print(event, measurements, metadata)

    telemetry.attach("my-logger", ("aiotp", "actor"), log)
    ...
    telemetry.detach("my-logger")

Guarantees:
- `execute` never raises because of a handler: a handler that raises is logged with its traceback
  and detached, as :telemetry does, so a broken handler cannot crash the code that emits events
  (an actor, a pool dispatcher) nor spam the log on every event.
- With no handler attached, `execute` costs one truth test: emitters call it on hot paths.
- Handlers run synchronously in the emitter's thread; keep them short or hand off to a queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Event", "Handler", "attach", "detach", "execute", "handlers", "observes"]

Event = tuple[str, ...]
Handler = Callable[[Event, Mapping[str, Any], Mapping[str, Any]], None]

_log = logging.getLogger("aiotp.telemetry")
# handler_id -> (prefix, fn). Replaced wholesale on attach/detach (copy-on-write) so that
# `execute` can iterate without a lock while another thread attaches or detaches.
_handlers: dict[str, tuple[Event, Handler]] = {}
_lock = threading.Lock()
# prefix -> whether any attached handler receives some event under it; rebuilt on change.
_observed: dict[Event, bool] = {}


def attach(handler_id: str, event_prefix: Event | list[str], fn: Handler) -> None:
    """Attach `fn` to every event starting with `event_prefix`.

    Raises `ValueError` if `handler_id` is already attached (ids are how you detach, so two
    handlers sharing one would make `detach` ambiguous), `TypeError` for a non-callable handler.
    """
    global _handlers
    if not callable(fn):
        raise TypeError(f"telemetry handler {handler_id!r} is not callable: {fn!r}")
    prefix = tuple(event_prefix)
    if not all(isinstance(part, str) for part in prefix):
        raise TypeError(f"telemetry event prefix must be strings, got {event_prefix!r}")
    with _lock:
        if handler_id in _handlers:
            raise ValueError(f"telemetry handler {handler_id!r} is already attached")
        new = dict(_handlers)
        new[handler_id] = (prefix, fn)
        _handlers = new
        _observed.clear()


def detach(handler_id: str) -> bool:
    """Detach a handler; returns False if no handler had that id."""
    global _handlers
    with _lock:
        if handler_id not in _handlers:
            return False
        new = dict(_handlers)
        del new[handler_id]
        _handlers = new
        _observed.clear()
        return True


def handlers() -> dict[str, Event]:
    """The attached handler ids and their prefixes (for introspection and tests)."""
    return {hid: prefix for hid, (prefix, _) in _handlers.items()}


def observes(prefix: Event) -> bool:
    """Whether any attached handler would receive an event starting with `prefix`.

    For emitters on hot paths whose events cost something to build (a dict of metadata, a
    clock read): with handlers attached to other events only (a metrics exporter that follows
    worker deaths), they skip the work. One dict lookup once cached; the cache is dropped on
    every attach and detach.
    """
    known = _observed.get(prefix)
    if known is None:
        known = any(
            handler_prefix[: len(prefix)] == prefix[: len(handler_prefix)]
            for handler_prefix, _ in _handlers.values()
        )
        _observed[prefix] = known
    return known


def execute(
    event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
) -> None:
    """Dispatch an event to every handler whose prefix matches it."""
    table = _handlers
    if not table:
        return
    meta: Mapping[str, Any] = metadata if metadata is not None else {}
    for handler_id, (prefix, fn) in table.items():
        if event[: len(prefix)] != prefix:
            continue
        try:
            fn(event, measurements, meta)
        except Exception:
            _log.exception(
                "telemetry handler %r failed on event %r and was detached", handler_id, event
            )
            detach(handler_id)
