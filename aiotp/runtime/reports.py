"""Crash reports logged once: a mark on an exception that says "already logged, with its
traceback".

The problem: one failure climbs a supervision tree. A pool's worker fails in ``setup()``; the
pool logs it (with the worker's traceback), its worker supervisor sees a failed restart, the
pool's supervisor a failed restart of its manager, each with the same exception as the cause.
Each layer logging it at ERROR would print the same traceback three times. The layer that
understands a failure best logs it and marks it; the layers above it log a marked failure at
DEBUG only.

Not a registry: the mark lives on the exception object (exceptions cannot be weakly
referenced), so it goes when the exception goes.
"""

from __future__ import annotations

import contextlib

__all__ = ["mark_reported", "reported"]

_MARK = "_aiotp_reported"


def mark_reported(exc: BaseException) -> None:
    """Note that `exc` has been logged with its traceback."""
    # An exception type with __slots__ and no __dict__ takes no mark: it is logged again.
    with contextlib.suppress(AttributeError):
        setattr(exc, _MARK, True)


def reported(exc: BaseException) -> bool:
    """Whether `exc` has been logged with its traceback already."""
    return getattr(exc, _MARK, False) is True
