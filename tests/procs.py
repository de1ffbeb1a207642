"""What processes a test left behind, read from /proc (Linux, like the process profile).

`descendants` is the pytest plugin's own (aiotp.ops.testing): the suite checks with what users
get."""

from __future__ import annotations

from aiotp.ops.testing import descendants

__all__ = ["alive", "descendants"]


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")
