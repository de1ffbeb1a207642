"""The root of every error aiotp raises.

This module is a leaf: it imports nothing from aiotp, so that every layer (runtime, supervisors,
workers, session_store) can derive its own typed errors from one base without import cycles.
Catch `AiotpError` to catch anything the runtime itself raised, and nothing your own code raised.
"""

from __future__ import annotations

__all__ = ["AiotpError"]


class AiotpError(Exception):
    """Base class of every error raised by aiotp itself."""
