"""A snapshot drawn with rich: header, pools, sessions, supervision tree (``aiotp top`` / ``tree``).

Pure: a snapshot dict in, a renderable out, no I/O, so the live view, the one-shot print and the
tests draw exactly the same picture. What deserves a look stands out: a restart count above zero
is bold yellow, errors and children that are DOWN are bold red, and the counts are written out
too, so a terminal without colour (or ``tmux capture-pane``) shows them as well.

The snapshot comes from another process, possibly another aiotp version: every field is read
with a default, and a missing one, or one of the wrong type (a number that is not finite, a
list where an object belongs), shows as ``-`` rather than breaking the view.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

__all__ = ["MAX_CHILDREN", "render"]

#: Children shown per tree node; the rest are summed up on one line (a 250-worker pool).
MAX_CHILDREN = 12

_WARN = "bold yellow"
_BAD = "bold red"
_DIM = "dim"


def render(snap: Mapping[str, Any] | None, *, status: str | None = None) -> RenderableType:
    """The whole picture; `status` (e.g. "disconnected: ...") is shown first, in red, and the
    snapshot (the last one seen, if any) below it, dimmed as out of date."""
    parts: list[RenderableType] = []
    if status is not None:
        parts.append(Text(status, style="bold white on red"))
    if snap is None:
        parts.append(Text("no snapshot yet", style=_DIM))
        return Group(*parts)
    parts.append(_header(snap, stale=status is not None))
    for pool in _list(snap.get("pools")):
        parts.append(_pool(pool))
    sessions = snap.get("sessions")
    if isinstance(sessions, Mapping):
        parts.append(_sessions(sessions))
    parts.append(_tree(snap))
    return Group(*parts)


# -- header ---------------------------------------------------------------------------------
def _header(snap: Mapping[str, Any], stale: bool) -> Text:
    clock = _clock(snap.get("time"))
    state = str(snap.get("state", "-"))
    text = Text.assemble(
        (f"{snap.get('name', '?')}", "bold"),
        f"  pid {snap.get('pid', '-')} on {snap.get('host', '-')}",
        f"  up {_duration(snap.get('uptime'))}",
        f"  actors {snap.get('actors', '-')}  ",
        (state, "bold green" if state == "RUNNING" else _WARN),
        f"  at {clock}",
    )
    if stale:
        text.stylize(_DIM)
    return text


# -- pools ----------------------------------------------------------------------------------
def _pool(pool: Mapping[str, Any]) -> Group:
    latency = _map(pool.get("latency"))
    wait = _map(pool.get("queue_wait"))
    title = Text.assemble(
        ("pool ", _DIM),
        (str(pool.get("name", "?")), "bold cyan"),
        f" ({pool.get('profile', '?')}, {pool.get('live', '-')}/{pool.get('size', '-')} live)",
        f"  busy {pool.get('busy', '-')}/{pool.get('capacity', '-')}",
        f"  queued {pool.get('queued', '-')}",
        f"  requests {pool.get('requests', '-')}  ",
        _count("errors", pool.get("errors"), _BAD),
        "  ",
        _count("restarts", pool.get("restarts"), _WARN),
        f"  latency p50 {_ms(latency.get('p50'))} p99 {_ms(latency.get('p99'))}",
        f"  wait p99 {_ms(wait.get('p99'))}",
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("worker", "pid", "node", "state", "busy", "requests", "errors", "sessions"):
        table.add_column(column, justify="right" if column in _NUMERIC else "left")
    table.add_column("restarts", justify="right")
    table.add_column("up", justify="right")
    for w in _list(pool.get("workers")):
        state = str(w.get("state", "-"))
        table.add_row(
            str(w.get("worker_id", "?")),
            str(w.get("pid") if w.get("pid") is not None else "-"),
            str(w.get("node") or "-"),
            Text(state, style="" if state == "serving" else _WARN),
            f"{w.get('busy', '-')}/{w.get('capacity', '-')}",
            str(w.get("requests", "-")),
            _number(w.get("errors"), _BAD),
            str(w.get("pinned_sessions", "-")),
            _number(w.get("restarts"), _WARN),
            _duration(w.get("uptime")),
        )
    return Group(title, table)  # the title above, not in the table: it must not wrap


_NUMERIC = {"pid", "busy", "requests", "errors", "sessions"}


# -- sessions -------------------------------------------------------------------------------
def _sessions(info: Mapping[str, Any]) -> Text:
    if "error" in info:
        return Text.assemble(("sessions ", "bold"), (f"unreadable: {info['error']}", _BAD))
    states = info.get("by_state")
    by_state = (
        "  ".join(f"{k} {v}" for k, v in states.items() if v) if isinstance(states, Mapping) else ""
    )
    return Text.assemble(
        ("sessions ", "bold"),
        f"{info.get('current', '-')}/{info.get('max', '-')}",
        f"  {by_state}" if by_state else "",
        (
            f"  (created {info.get('created', '-')}, deleted {info.get('deleted', '-')},"
            f" expired {info.get('expired', '-')}, gc {info.get('gc', '-')})",
            _DIM,
        ),
    )


# -- the supervision tree -------------------------------------------------------------------
def _tree(snap: Mapping[str, Any]) -> Tree:
    root = Tree(Text.assemble(("supervision tree", "bold"), (f" of {snap.get('name', '?')}", _DIM)))
    _add_children(root, _list(snap.get("tree")), snap.get("tree_more"))
    return root


def _add_children(parent: Tree, children: Sequence[Mapping[str, Any]], more: Any) -> None:
    """At most MAX_CHILDREN nodes, then one line for the rest: those cut here and those the
    application already left out (``more``, from a snapshot taken with ``max_children``)."""
    for child in children[:MAX_CHILDREN]:
        _add_children(parent.add(_label(child)), _list(child.get("children")), child.get("more"))
    rest = children[MAX_CHILDREN:]
    count = len(rest)
    restarts = sum(c["restarts"] for c in rest if _num(c.get("restarts")))
    down = sum(1 for c in rest if c.get("state") == "DOWN")
    if isinstance(more, Mapping):
        count += more.get("count", 0) if _num(more.get("count")) else 0
        restarts += more.get("restarts", 0) if _num(more.get("restarts")) else 0
        down += more.get("down", 0) if _num(more.get("down")) else 0
    if count:
        parent.add(
            Text.assemble(
                (f"... {count} more", _DIM),
                "  ",
                _count("restarts", restarts, _WARN),
                "  ",
                _count("down", down, _BAD),
            )
        )


def _label(node: Mapping[str, Any]) -> Text:
    # A supervised child is known by its child id ("ml"), others by their registered name;
    # a registered name that says more than the child id follows, dimmed.
    name, child_id = node.get("name"), node.get("child_id")
    state = str(node.get("state", "?"))
    style = {"RUNNING": "green", "DOWN": _BAD}.get(state, _WARN)
    parts: list[Any] = []
    if child_id or name:
        parts += [(str(child_id or name), "bold"), " "]
    parts += [(str(node.get("class", "?")), "cyan" if node.get("supervisor") else "")]
    if child_id and name and name != child_id:
        parts += [(f" {name}", _DIM)]
    parts += ["  ", (state, style), (f"  up {_duration(node.get('uptime'))}", _DIM)]
    mailbox = node.get("mailbox")
    if _num(mailbox) and mailbox:
        parts += ["  ", (f"mailbox {mailbox}", _WARN if mailbox > 100 else "")]
    restarts = node.get("restarts")
    if _num(restarts) and restarts:
        parts += ["  ", _count("restarts", restarts, _WARN)]
    return Text.assemble(*parts)


# -- helpers --------------------------------------------------------------------------------
def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _num(value: Any) -> bool:
    """A number the view can do sums with: not a bool, not NaN nor infinite (1e400 is)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _clock(taken: Any) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(taken)) if _num(taken) else "-"
    except (OverflowError, OSError, ValueError):  # a time no calendar holds (1e300)
        return "-"


def _count(label: str, value: Any, alarm: str) -> Text:
    """``label N``, in the alarm style when N > 0."""
    return Text(
        f"{label} {value if value is not None else '-'}", style=alarm if _hot(value) else ""
    )


def _number(value: Any, alarm: str) -> Text:
    return Text(str(value if value is not None else "-"), style=alarm if _hot(value) else "")


def _hot(value: Any) -> bool:
    return _num(value) and value > 0


def _ms(seconds: Any) -> str:
    if not _num(seconds):
        return "-"
    ms = seconds * 1000.0
    return f"{ms:.2f}ms" if ms < 10 else f"{ms:.0f}ms"


def _duration(seconds: Any) -> str:
    if not _num(seconds) or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
