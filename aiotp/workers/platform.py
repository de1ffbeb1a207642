"""Which platforms each worker profile runs on, checked before anything starts.

The thread profile runs wherever CPython and asyncio do. The process profile needs Linux 5.3+:
it watches and kills workers through pidfds (so a kill never hits a reused pid), puts each
worker in its own process group (so a tool's children die with it), and ties workers to the
runtime with the parent-death signal. Elsewhere it is refused up front with
`UnsupportedPlatform` rather than failing after a child process started.
"""

from __future__ import annotations

import os
import sys

from aiotp.workers.errors import UnsupportedPlatform

__all__ = ["check_process_profile"]


def check_process_profile() -> None:
    """Raise `UnsupportedPlatform` unless the process profile can run here."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        raise UnsupportedPlatform(
            f"the process profile needs Linux 5.3+ with os.pidfd_open (this is {sys.platform}, "
            "Python {0}.{1}); use profile='thread'".format(*sys.version_info[:2])
        )
