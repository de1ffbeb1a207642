"""Choosing the event loop: uvloop when it is installed, the standard asyncio loop otherwise.

uvloop roughly halves the cost of a message here, but it is optional at run time: the runtime
never requires it, and ``AIOTP_LOOP=asyncio`` in the environment forces the standard loop (useful
to compare the two, or to debug with asyncio's debug mode).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

__all__ = ["loop_factory", "uvloop_available"]


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def loop_factory(prefer_uvloop: bool | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory for `asyncio.Runner(loop_factory=...)`: uvloop when wanted and installed."""
    if prefer_uvloop is None:
        prefer_uvloop = os.environ.get("AIOTP_LOOP", "").lower() != "asyncio"
    if prefer_uvloop and uvloop_available():
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop
