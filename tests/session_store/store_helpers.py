"""Helpers shared by the session store tests: a store on a clock the test moves by hand."""

from __future__ import annotations

from typing import Any

import aiotp


class Clock:
    """A monotonic clock that only moves when the test sets ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw: Any) -> tuple[aiotp.SessionStore, Clock]:
    clock = Clock()
    return aiotp.SessionStore(clock=clock, **kw), clock
