"""Streams: parent memory under a slow consumer, items/s under a fast one.

Rows:
- process profile, parent RSS growth while a slow consumer (a 1 ms pause every 100 items) reads N
  items of 1 KiB from a generator tool (default N = 1M, --quick 100k), vs a raw stream from a
  child process read at the same pace through an asyncio StreamReader (the kernel's socket buffer
  and the reader's limit are its backpressure). Target: growth < 50 MB.
- process profile, items/s of a fast consumer vs the raw floor: a child process writing
  length-prefixed msgpack item frames over a socketpair, one write per item, decoded by a bare
  asyncio.Protocol that only counts them. Target: ratio >= 0.5.
- thread profile, items/s of a fast consumer vs a generator on a bare thread handing each item
  to an asyncio.Queue with call_soon_threadsafe (the textbook bridge).
- with ``--against DIR`` (another aiotp checkout, e.g. a git worktree of an older commit): the
  fast process consumer here vs there, in the same run. Target: ratio >= 1 / 1.3.

Each measurement runs in a fresh interpreter (RSS is per process, and memory a run grew is never
all given back to the OS), alternating the two sides.

Measured on a 2-core machine, default run, medians of 5 (before -> after the credit window):
RSS growth for 1M items 270 MB -> 0 MB (the raw floor: 0.4 MB); process items/s 172k (0.45x the
floor) -> 254k (0.66x), and 1.48x the old code in the same run; thread items/s 25k -> 784k
(1.03x the bare-thread bridge).

    python benchmarks/bench_stream.py [--json] [--quick] [--runs N] [--against DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
from harness import Row, alternate, emit, split_frames

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ADAPTER = "stream_adapter:Items"
SIZE = 1024
PACE = 100  # the slow consumer pauses 1 ms every PACE items: at most ~100k items/s

RAW_STREAM_CHILD = r"""
import os, socket, struct, msgpack
s = socket.socket(fileno=int(os.environ["FD"]))
n, item = int(os.environ["N"]), b"x" * int(os.environ["SIZE"])
H, pk = struct.Struct(">I"), msgpack.Packer(use_bin_type=True)
for _ in range(n):
    body = pk.pack([3, 1, item])
    s.sendall(H.pack(len(body)) + body)
body = pk.pack([4, 1])
s.sendall(H.pack(len(body)) + body)
s.close()
"""


def rss_mb() -> float:
    """Resident set size of this process, from /proc (no psutil needed)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# -- measurements, each run in its own interpreter ---------------------------------------------
async def aiotp_rss(n: int) -> float:
    import aiotp

    async with aiotp.Runtime() as rt:
        await rt.start_pool("s", ADAPTER, profile="process", size=1, heartbeat=None)
        async for _ in rt.stream("s", "items", {"n": 1000, "size": SIZE}):
            pass  # warm up: first-use allocations are not growth
        base = peak = rss_mb()
        i = 0
        async for _ in rt.stream("s", "items", {"n": n, "size": SIZE}, timeout=60):
            i += 1
            if i % PACE == 0:
                peak = max(peak, rss_mb())
                await asyncio.sleep(0.001)
        assert i == n, (i, n)
        return peak - base


async def aiotp_rate(n: int, profile: str) -> float:
    import aiotp

    async with aiotp.Runtime() as rt:
        await rt.start_pool("s", ADAPTER, profile=profile, size=1, heartbeat=None)
        async for _ in rt.stream("s", "items", {"n": 1000, "size": SIZE}):
            pass
        i = 0
        t0 = time.perf_counter()
        async for _ in rt.stream("s", "items", {"n": n, "size": SIZE}, timeout=60):
            i += 1
        elapsed = time.perf_counter() - t0
        assert i == n, (i, n)
        return n / elapsed


def _raw_child(n: int) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    parent, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW_STREAM_CHILD],
        pass_fds=(child.fileno(),),
        env={**os.environ, "FD": str(child.fileno()), "N": str(n), "SIZE": str(SIZE)},
    )
    child.close()
    return parent, proc


async def raw_rss(n: int) -> float:
    sock, proc = _raw_child(n)
    header = struct.Struct(">I")
    base = peak = rss_mb()
    reader, writer = await asyncio.open_connection(sock=sock)
    i = 0
    while True:
        (size,) = header.unpack(await reader.readexactly(4))
        frame = msgpack.unpackb(await reader.readexactly(size))
        if frame[0] != 3:
            break
        i += 1
        if i % PACE == 0:
            peak = max(peak, rss_mb())
            await asyncio.sleep(0.001)
    writer.close()
    proc.wait()
    assert i == n, (i, n)
    return peak - base


class _Counter(asyncio.Protocol):
    """The floor's consumer: decode each frame, count items, finish on END."""

    def __init__(self, done: asyncio.Future[int]) -> None:
        self.buf = bytearray()
        self.done = done
        self.count = 0
        self.header = struct.Struct(">I")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for frame in split_frames(self.buf):
            if frame[0] == 3:
                self.count += 1
            elif not self.done.done():
                self.done.set_result(self.count)


async def raw_rate(n: int) -> float:
    sock, proc = _raw_child(n)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    t0 = time.perf_counter()
    transport, _ = await loop.connect_accepted_socket(lambda: _Counter(done), sock=sock)
    count = await done
    elapsed = time.perf_counter() - t0
    transport.close()
    proc.wait()
    assert count == n, (count, n)
    return n / elapsed


async def thread_floor_rate(n: int) -> float:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    end = object()

    def items() -> Iterator[bytes]:
        item = b"x" * SIZE
        for _ in range(n):
            yield item

    def produce() -> None:
        for item in items():
            loop.call_soon_threadsafe(queue.put_nowait, item)
        loop.call_soon_threadsafe(queue.put_nowait, end)

    t0 = time.perf_counter()
    threading.Thread(target=produce, daemon=True).start()
    i = 0
    while (await queue.get()) is not end:
        i += 1
    elapsed = time.perf_counter() - t0
    assert i == n, (i, n)
    return n / elapsed


MEASURES: dict[str, Callable[[int], Any]] = {
    "rss": aiotp_rss,
    "raw-rss": raw_rss,
    "rate": lambda n: aiotp_rate(n, "process"),
    "thread-rate": lambda n: aiotp_rate(n, "thread"),
    "raw-rate": raw_rate,
    "thread-floor-rate": thread_floor_rate,
}


def measure_here(kind: str, n: int) -> float:
    from aiotp.runtime.loop import loop_factory

    with asyncio.Runner(loop_factory=loop_factory(None)) as runner:
        return float(runner.run(MEASURES[kind](n)))


def in_child(kind: str, n: int, root: Path = ROOT) -> Callable[[], float]:
    """A measurement in a fresh interpreter that imports aiotp from `root`."""

    def run() -> float:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root), str(HERE), env.get("PYTHONPATH", "")) if p
        )
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--measure", kind, "--n", str(n)],
            env=env,
            cwd=str(HERE),
            check=True,
            capture_output=True,
            text=True,
        )
        return float(out.stdout.strip().splitlines()[-1])

    return run


def _describe(root: Path) -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"aiotp at {root}"  # e.g. a `git archive` export
    return f"aiotp at {root} ({rev})"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--quick", action="store_true", help="finish in under 30 s")
    parser.add_argument("--runs", type=int, default=None, help="alternating repetitions")
    parser.add_argument("--against", type=Path, default=None, help="another aiotp checkout")
    parser.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.measure:
        print(measure_here(args.measure, args.n))
        return
    runs = args.runs or (3 if args.quick else 5)
    rss_n = 100_000 if args.quick else 1_000_000
    rate_n = 50_000 if args.quick else 300_000
    rows: list[Row] = [
        alternate(
            f"process stream, slow consumer, parent RSS growth ({rss_n:,} x 1 KiB)",
            "MB",
            "lower",
            in_child("rss", rss_n),
            "raw stream read at the same pace (StreamReader)",
            in_child("raw-rss", rss_n),
            runs,
            target="aiotp < 50 MB",
        ),
        alternate(
            "process stream, fast consumer (1 KiB items)",
            "items/s",
            "higher",
            in_child("rate", rate_n),
            "raw msgpack frames over a socketpair from a child",
            in_child("raw-rate", rate_n),
            runs,
            target="ratio >= 0.5",
        ),
        alternate(
            "thread stream, fast consumer (1 KiB items)",
            "items/s",
            "higher",
            in_child("thread-rate", rate_n),
            "bare thread -> call_soon_threadsafe -> asyncio.Queue",
            in_child("thread-floor-rate", rate_n),
            runs,
        ),
    ]
    if args.against is not None:
        rows.append(
            alternate(
                "process stream, fast consumer, this checkout vs another",
                "items/s",
                "higher",
                in_child("rate", rate_n),
                _describe(args.against.resolve()),
                in_child("rate", rate_n, args.against.resolve()),
                runs,
                target="ratio >= 0.77 (within 1.3x)",
            )
        )
    emit(rows, args.json)


if __name__ == "__main__":
    main()
