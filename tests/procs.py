"""What processes a test left behind, read from /proc (Linux, like the process profile)."""

from __future__ import annotations

import os


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        state, ppid = fields[0], int(fields[1])
        if state in ("Z", "X"):
            continue  # a zombie is dead; its parent reaps it
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(root: int | None = None) -> list[int]:
    """Live (non-zombie) descendants of `root` (default: this process)."""
    tree = _children_map()
    found: list[int] = []
    todo = [os.getpid() if root is None else root]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")
