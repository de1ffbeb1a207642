"""``aiotp top`` and ``aiotp tree``: look at a running application through its control socket.

- ``aiotp top --socket PATH [--interval 0.25]``: a live, full-screen view (rich `Live`) of the
  pools, the sessions and the supervision tree, redrawn every ``interval`` seconds (default 0.25:
  a restart shows within a quarter second). Each redraw costs the application one snapshot, so
  the view asks again no sooner than 4 times the last round trip (a large application spends at
  most a fifth of its loop being looked at), and the tree lists at most 12 children per node,
  the application counting the rest. When the application goes away the last picture stays,
  dimmed, under a red "disconnected" line, and the view retries once a second until it comes
  back. Ctrl-C quits with status 0.
- ``aiotp tree --socket PATH [--json]``: the same picture once (without colour when stdout is
  not a terminal), or the raw snapshot as indented JSON.

Mistakes are one line on stderr and exit status 1, never a traceback: a path with no socket,
nobody listening (``tree``), a bad ``--interval``, a reply the view cannot read or draw. ``top``
refuses a path that does not exist when it starts (a typo would otherwise wait forever), but
waits for one that stops answering.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live

from aiotp.ops.control_client import ControlClient, fetch_snapshot
from aiotp.ops.control_protocol import ControlError, ControlUnavailable, RemoteError
from aiotp.ops.render import MAX_CHILDREN, render

if TYPE_CHECKING:
    from aiotp.ops.snapshot_types import Snapshot

__all__ = ["top_command", "tree_command"]

#: Seconds between reconnection attempts while the application is away.
RETRY_EVERY = 1.0
#: The view waits at least this many times a snapshot's round trip before the next one, so
#: that looking at an application never takes more than ~1/(1+LOAD_FACTOR) of its loop.
LOAD_FACTOR = 4.0
#: Width of the picture when stdout is not a terminal and $COLUMNS is not set (rich's 80
#: would wrap every pool's title line).
PIPE_WIDTH = 160
_HINT = " (is the application running with --control-socket?)"


def tree_command(args: argparse.Namespace) -> int:
    """Print the picture (or with ``--json`` the snapshot) once; 0, or 1 with one line on
    stderr when the socket cannot be read."""
    try:
        snap = fetch_snapshot(args.socket, max_children=None if args.json else MAX_CHILDREN)
    except ControlError as exc:
        return _fail("tree", exc)
    try:
        if args.json:
            sys.stdout.write(json.dumps(snap, indent=2) + "\n")
            sys.stdout.flush()
        else:
            _console().print(render(snap))
    except BrokenPipeError:  # `aiotp tree | head`: the reader has what it wanted
        _quiet_stdout()
    except Exception as exc:  # a reply the view cannot draw (another version, a bug): one line
        return _fail("tree", _undrawable(exc))
    return 0


def top_command(args: argparse.Namespace) -> int:
    """Run the live view until Ctrl-C (exit status 0)."""
    interval = args.interval
    if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
        return _fail("top", f"--interval must be a positive number of seconds, got {interval!r}")
    if not os.path.exists(args.socket):
        return _fail("top", f"no control socket at {args.socket}")
    console = Console()
    client = ControlClient(args.socket, timeout=max(2.0, 4 * interval))
    try:
        return _top(client, console, interval)
    except Exception as exc:  # a reply the view cannot draw: one line once the screen is back
        return _fail("top", _undrawable(exc))
    finally:
        client.close()


def _top(client: ControlClient, console: Console, interval: float) -> int:
    snap: Snapshot | None = None
    try:
        with Live(render(None), console=console, screen=True, auto_refresh=False) as live:
            while True:
                status: str | None = None
                asked = time.monotonic()
                try:
                    snap = client.snapshot(max_children=MAX_CHILDREN)
                except RemoteError as exc:
                    status = f"the application could not take a snapshot: {exc}"
                except ControlError as exc:
                    status = f"disconnected: {exc}; retrying every {RETRY_EVERY:g} s (Ctrl-C quits)"
                live.update(render(snap, status=status), refresh=True)
                # A large application takes a while to picture: asking again at once would
                # keep its loop busy with us. At least LOAD_FACTOR times the last round trip.
                took = time.monotonic() - asked
                pause = interval if status is None else max(interval, RETRY_EVERY)
                time.sleep(max(pause, LOAD_FACTOR * took))
    except KeyboardInterrupt:
        return 0


def _undrawable(exc: Exception) -> str:
    return f"cannot draw the application's reply: {type(exc).__name__}: {exc}"[:300]


def _fail(command: str, problem: object) -> int:
    # The hint only when nobody answered: a server that answered oddly is running.
    hint = _HINT if isinstance(problem, ControlUnavailable) else ""
    print(f"aiotp {command}: {problem}{hint}", file=sys.stderr)
    return 1


def _console() -> Console:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush does
    not print a second error on the way out."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
