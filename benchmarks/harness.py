"""Shared plumbing for benchmarks: alternate aiotp with its floor, take medians, print rows.

Every benchmark measures aiotp side by side with a floor or a peer in the same process run,
alternating the two so that machine noise hits both alike, and reports the ratio
(see BENCHMARKS.md in the design notes). Output: a table, or one JSON object per line (--json).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

__all__ = ["Row", "alternate", "emit", "parse_args", "split_frames"]


class Row(dict[str, Any]):
    """One result line: name, unit, aiotp, baseline_name, baseline, ratio, better, runs."""


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--quick", action="store_true", help="finish in under 30 s")
    parser.add_argument("--runs", type=int, default=None, help="alternating repetitions")
    return parser.parse_args()


def alternate(
    name: str,
    unit: str,
    better: str,
    ours: Callable[[], float],
    baseline_name: str,
    baseline: Callable[[], float],
    runs: int,
    **extra: Any,
) -> Row:
    """Run `ours` and `baseline` alternately `runs` times; report medians and their ratio."""
    mine: list[float] = []
    theirs: list[float] = []
    for i in range(runs):
        # Alternate who goes first too, so warm-up and drift do not favour one side.
        if i % 2 == 0:
            mine.append(ours())
            theirs.append(baseline())
        else:
            theirs.append(baseline())
            mine.append(ours())
    a = statistics.median(mine)
    b = statistics.median(theirs)
    row = Row(
        name=name,
        unit=unit,
        aiotp=round(a, 4),
        baseline_name=baseline_name,
        baseline=round(b, 4),
        ratio=round(a / b, 3) if b else None,
        better=better,
        runs=runs,
    )
    row.update(extra)
    return row


def emit(rows: list[Row], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row), flush=True)
        return
    header = f"{'benchmark':44} {'aiotp':>12} {'baseline':>12} {'ratio':>7}  unit / baseline"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['name']:44} {r['aiotp']:>12} {r['baseline']:>12} {r['ratio']!s:>7}  "
            f"{r['unit']} ({r['better']} is better) vs {r['baseline_name']}"
        )


def split_frames(buf: bytearray) -> list[Any]:
    """Decode every whole length-prefixed msgpack frame at the start of `buf` and remove them
    (the floors' side of the wire protocol, shared by the pool and stream benchmarks)."""
    import struct

    import msgpack

    frames: list[Any] = []
    pos = 0
    while len(buf) - pos >= 4:
        (size,) = struct.unpack_from(">I", buf, pos)
        if len(buf) - pos - 4 < size:
            break
        frames.append(msgpack.unpackb(buf[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    del buf[:pos]
    return frames
