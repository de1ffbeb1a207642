"""Traces people can look at: a plan run as a Chrome trace (Perfetto, chrome://tracing) or as a
text timeline in the terminal.

::

    trace = executor.get_trace()
    Path("plan.json").write_text(json.dumps(to_chrome_trace(trace)))   # open in ui.perfetto.dev
    print(format_timeline(trace))

Both take `Executor.get_trace()` entries (dicts) or `TraceEntry` objects. Steps that overlap in
time are put on separate rows (lanes), the earliest free lane first, so concurrency shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiotp.plans.results import TraceEntry

__all__ = ["format_timeline", "to_chrome_trace"]

_MARKS = {"ok": "#", "error": "!", "timeout": "T", "cancelled": "x"}


def _entries(trace: Iterable[TraceEntry | Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for entry in trace:
        out.append(entry.as_dict() if isinstance(entry, TraceEntry) else dict(entry))
    return sorted(out, key=lambda e: (e["start"], e["step_id"], e["attempt"]))


def _lanes(entries: list[dict[str, Any]]) -> list[int]:
    """A lane per entry such that entries in one lane never overlap (greedy by start)."""
    ends: list[float] = []
    lanes = []
    for entry in entries:
        for lane, end in enumerate(ends):
            if end <= entry["start"]:
                ends[lane] = entry["start"] + entry["duration"]
                lanes.append(lane)
                break
        else:
            ends.append(entry["start"] + entry["duration"])
            lanes.append(len(ends) - 1)
    return lanes


def to_chrome_trace(trace: Iterable[TraceEntry | Mapping[str, Any]]) -> dict[str, Any]:
    """The trace in Chrome's trace-event format: one complete ("X") event per attempt, and its
    wait for locks and for a pool worker as events of their own before it."""
    entries = _entries(trace)
    events: list[dict[str, Any]] = []
    for entry, lane in zip(entries, _lanes(entries), strict=True):
        start_us = entry["start"] * 1e6
        args = {
            key: entry[key]
            for key in ("attempt", "status", "lock_wait", "pool_wait", "error")
            if entry.get(key) is not None
        }
        events.append(
            {
                "name": entry["step_id"],
                "cat": entry["tool"],
                "ph": "X",
                "ts": start_us,
                "dur": entry["duration"] * 1e6,
                "pid": 1,
                "tid": lane,
                "args": args,
            }
        )
        if entry.get("lock_wait"):
            events.append(
                {
                    "name": f"{entry['step_id']} (waits for locks)",
                    "cat": "wait",
                    "ph": "X",
                    "ts": start_us - entry["lock_wait"] * 1e6,
                    "dur": entry["lock_wait"] * 1e6,
                    "pid": 2,
                    "tid": lane,
                }
            )
        if entry.get("pool_wait"):
            events.append(
                {
                    "name": f"{entry['step_id']} (waits for a pool worker)",
                    "cat": "wait",
                    "ph": "X",
                    "ts": start_us,
                    "dur": entry["pool_wait"] * 1e6,
                    "pid": 3,
                    "tid": lane,
                }
            )
    events.append({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "plan steps"}})
    events.append({"name": "process_name", "ph": "M", "pid": 3, "args": {"name": "pool waits"}})
    events.append({"name": "process_name", "ph": "M", "pid": 2, "args": {"name": "lock waits"}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def format_timeline(trace: Iterable[TraceEntry | Mapping[str, Any]], width: int = 60) -> str:
    """A text Gantt chart: one line per attempt, ``#`` ran ok, ``!`` failed, ``T`` timed out,
    ``x`` cancelled; ``.`` before it is the time it waited for locks."""
    entries = _entries(trace)
    if not entries:
        return "(no steps ran)"
    end = max(e["start"] + e["duration"] for e in entries) or 1e-9
    scale = width / end
    label = max(len(f"{e['step_id']} #{e['attempt']}") for e in entries)
    lines = [f"{'step':<{label}} |{'0':<{width - 1}}| {end * 1e3:.1f} ms"]
    for entry in entries:
        begin = min(int(entry["start"] * scale), width - 1)  # one ending the run still shows
        wait = int(entry.get("lock_wait", 0.0) * scale)
        run = max(1, round(entry["duration"] * scale))
        mark = _MARKS.get(entry["status"], "?")
        wait = min(wait, begin)  # the wait started at the run's start minus lock_wait
        bar = " " * (begin - wait) + "." * wait + mark * run
        name = f"{entry['step_id']} #{entry['attempt']}"
        lines.append(
            f"{name:<{label}} |{bar[:width]:<{width}}| {entry['duration'] * 1e3:.1f} ms "
            f"{entry['status']}"
        )
    return "\n".join(lines)
