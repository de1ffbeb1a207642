"""Pools: aiotp's execute against the raw floor (a length-prefixed msgpack echo over a socket
to a child process) and against peers (ProcessPoolExecutor, loky, pebble, run_in_executor).

Rows:
- process profile, sequential execute round trip vs the raw echo (target <= 1.2x) and vs the peers
- process profile, 64 requests in flight on 4 workers vs the raw pipelined echo (>= 0.7x)
- thread profile round trip vs loop.run_in_executor on a bare ThreadPoolExecutor (<= 1.5x)
- worker start: one process worker, and a pool of 32, vs bare interpreter starts
- routing (routing_cases.py): strict affinity vs hint throughput; dispatch with 250 workers vs
  4; the success path of a call with retries vs without (<= 1.05x)

    python benchmarks/bench_pool.py [--json] [--quick]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
from harness import Row, alternate, emit, parse_args, split_frames
from routing_cases import dispatch_ns, retry_us, sessions_us

import aiotp
from aiotp.runtime.loop import loop_factory

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)
ADAPTER = "echo_adapter:Echo"

RAW_ECHO_CHILD = r"""
import os, socket, struct, msgpack
s = socket.socket(fileno=int(os.environ["FD"]))
H = struct.Struct(">I"); buf = bytearray()
while True:
    data = s.recv(1 << 20)
    if not data: break
    buf += data; out = []; pos = 0
    while len(buf) - pos >= 4:
        (n,) = H.unpack_from(buf, pos)
        if len(buf) - pos - 4 < n: break
        msg = msgpack.unpackb(buf[pos + 4:pos + 4 + n]); pos += 4 + n
        body = msgpack.packb([1, msg[1], msg[3]["value"]])
        out.append(H.pack(len(body)) + body)
    del buf[:pos]
    if out: s.sendall(b"".join(out))
"""


def echo(value: Any) -> Any:
    return value


class RawEcho(asyncio.Protocol):
    """The floor: the least an asyncio client can do for one length-prefixed msgpack echo."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiters: dict[int, asyncio.Future[Any]] = {}
        self.header = struct.Struct(">I")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for msg in split_frames(self.buf):
            self.waiters.pop(msg[1]).set_result(msg[2])


async def raw_echo_client() -> tuple[Any, RawEcho, subprocess.Popen[bytes]]:
    parent, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW_ECHO_CHILD],
        pass_fds=(child.fileno(),),
        env={**os.environ, "FD": str(child.fileno())},
    )
    child.close()
    loop = asyncio.get_running_loop()
    transport, proto = await loop.connect_accepted_socket(RawEcho, sock=parent)
    return transport, proto, proc


def _run(factory: Callable[[], asyncio.AbstractEventLoop], coro: Any) -> float:
    with asyncio.Runner(loop_factory=factory) as runner:
        return float(runner.run(coro))


async def raw_sequential(n: int) -> float:
    transport, proto, proc = await raw_echo_client()
    loop = asyncio.get_running_loop()
    header = struct.Struct(">I")
    try:
        t0 = time.perf_counter()
        for i in range(n):
            body = msgpack.packb([0, i, "echo", {"value": i}])
            fut = loop.create_future()
            proto.waiters[i] = fut
            transport.write(header.pack(len(body)) + body)
            await fut
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        transport.close()
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)


async def raw_pipelined(n: int, in_flight: int, procs: int) -> float:
    clients = [await raw_echo_client() for _ in range(procs)]
    loop = asyncio.get_running_loop()
    header = struct.Struct(">I")
    ids = iter(range(10**12))

    async def lane(k: int) -> None:
        transport, proto, _ = clients[k % procs]
        for _ in range(n // in_flight):
            i = next(ids)
            body = msgpack.packb([0, i, "echo", {"value": i}])
            fut = loop.create_future()
            proto.waiters[i] = fut
            transport.write(header.pack(len(body)) + body)
            await fut

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(lane(k) for k in range(in_flight)))
        return n / (time.perf_counter() - t0)
    finally:
        for transport, _, _proc in clients:
            transport.close()
        for _, _, proc in clients:
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)


async def aiotp_sequential(n: int, profile: str) -> float:
    async with aiotp.Runtime() as rt:
        await rt.start_pool("b", ADAPTER, profile=profile, size=1, heartbeat=None)
        await rt.execute("b", "echo", {"value": 0})
        t0 = time.perf_counter()
        for i in range(n):
            await rt.execute("b", "echo", {"value": i})
        return (time.perf_counter() - t0) / n * 1e6


async def aiotp_pipelined(n: int, in_flight: int, size: int) -> float:
    async with aiotp.Runtime() as rt:
        await rt.start_pool(
            "b",
            ADAPTER,
            profile="process",
            size=size,
            heartbeat=None,
            max_queue=in_flight,
            pipeline=in_flight // size,  # each worker holds its share of the 64
        )

        async def lane() -> None:
            for i in range(n // in_flight):
                await rt.execute("b", "echo", {"value": i})

        t0 = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        return n / (time.perf_counter() - t0)


def executor_round_trip(make: Callable[[], Any], n: int) -> Callable[[], float]:
    def bench() -> float:
        ex = make()
        try:
            ex.submit(echo, 0).result()
            t0 = time.perf_counter()
            for i in range(n):
                ex.submit(echo, i).result()
            return (time.perf_counter() - t0) / n * 1e6
        finally:
            ex.shutdown(wait=True)

    return bench


def pebble_round_trip(n: int) -> Callable[[], float]:
    import pebble

    def bench() -> float:
        with pebble.ProcessPool(max_workers=1) as pool:
            pool.schedule(echo, args=(0,)).result()
            t0 = time.perf_counter()
            for i in range(n):
                pool.schedule(echo, args=(i,)).result()
            return (time.perf_counter() - t0) / n * 1e6

    return bench


async def run_in_executor_rt(n: int) -> float:
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        await loop.run_in_executor(ex, echo, 0)
        t0 = time.perf_counter()
        for i in range(n):
            await loop.run_in_executor(ex, echo, i)
        return (time.perf_counter() - t0) / n * 1e6


async def aiotp_start(size: int) -> float:
    async with aiotp.Runtime() as rt:
        t0 = time.perf_counter()
        await rt.start_pool("b", ADAPTER, profile="process", size=size, heartbeat=None)
        elapsed = time.perf_counter() - t0
        await rt.stop_pool("b")
        return elapsed * 1e3


def bare_starts(size: int) -> float:
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", "import asyncio, msgpack"]) for _ in range(size)
    ]
    for p in procs:
        p.wait()
    return (time.perf_counter() - t0) * 1e3


def main() -> None:
    args = parse_args(__doc__ or "")
    runs = args.runs or 5
    n = 2_000 if args.quick else 10_000
    factory = loop_factory(None)
    loop_name = "uvloop" if factory is not asyncio.new_event_loop else "asyncio"
    rows: list[Row] = []
    seq = lambda: _run(factory, aiotp_sequential(n, "process"))  # noqa: E731
    rows.append(
        alternate(
            f"process execute, sequential [{loop_name}]",
            "us/call",
            "lower",
            seq,
            "raw msgpack echo over a socket",
            lambda: _run(factory, raw_sequential(n)),
            runs,
            target="ratio <= 1.2",
        )
    )
    peer_n = max(n // 4, 500)
    for peer, bench in (
        (
            "ProcessPoolExecutor",
            executor_round_trip(lambda: concurrent.futures.ProcessPoolExecutor(1), peer_n),
        ),
        ("loky", executor_round_trip(_loky, peer_n)),
        ("pebble", pebble_round_trip(peer_n)),
    ):
        rows.append(
            alternate(
                f"process execute vs {peer} [{loop_name}]",
                "us/call",
                "lower",
                seq,
                peer,
                bench,
                3 if args.quick else runs,
                target="ratio <= 0.5 (2x faster)",
            )
        )
    total = 20_000 if args.quick else 100_000
    rows.append(
        alternate(
            f"process execute, 64 in flight, 4 workers [{loop_name}]",
            "calls/s",
            "higher",
            lambda: _run(factory, aiotp_pipelined(total, 64, 4)),
            "raw pipelined echo, 4 children",
            lambda: _run(factory, raw_pipelined(total, 64, 4)),
            runs,
            target=">= 100k calls/s and ratio >= 0.7",
        )
    )
    rows.append(
        alternate(
            f"thread execute, sequential [{loop_name}]",
            "us/call",
            "lower",
            lambda: _run(factory, aiotp_sequential(n, "thread")),
            "run_in_executor, bare ThreadPoolExecutor",
            lambda: _run(factory, run_in_executor_rt(n)),
            runs,
            target="ratio <= 1.5",
        )
    )
    rows.append(
        alternate(
            "pool of 1 process worker ready",
            "ms",
            "lower",
            lambda: _run(factory, aiotp_start(1)),
            "1 bare `python -c 'import asyncio, msgpack'`",
            lambda: bare_starts(1),
            runs,
            target="<= 20 ms per worker",
        )
    )
    rows.append(
        alternate(
            "pool of 32 process workers ready",
            "ms",
            "lower",
            lambda: _run(factory, aiotp_start(32)),
            "32 bare interpreter starts",
            lambda: bare_starts(32),
            3 if args.quick else runs,
            target="<= 1000 ms",
        )
    )
    rows.extend(routing_rows(factory, loop_name, args.quick, runs))
    emit(rows, args.json)


def routing_rows(factory: Any, loop_name: str, quick: bool, runs: int) -> list[Row]:
    per_session = 100 if quick else 400
    rows = [
        alternate(
            f"{profile} strict_queue vs hint, 6 sessions/3 workers [{loop_name}]",
            "us/call",
            "lower",
            lambda profile=profile: _run(
                factory, sessions_us("strict_queue", profile, per_session)
            ),  # type: ignore[misc]
            "hint affinity, same load",
            lambda profile=profile: _run(factory, sessions_us("hint", profile, per_session)),  # type: ignore[misc]
            runs,
            target="ratio <= 1.5 (exact placement costs little)",
        )
        for profile in ("thread", "process")
    ]
    n = 20_000 if quick else 200_000
    rows.append(
        alternate(
            "dispatch, 250 workers (249 busy) vs 4 (3 busy)",
            "ns/op",
            "lower",
            lambda: _run(factory, dispatch_ns(250, n)),
            "the same dispatch on 4 workers",
            lambda: _run(factory, dispatch_ns(4, n)),
            runs,
            target="ratio <= 1.2 (cost does not grow with the pool)",
        )
    )
    calls = 2_000 if quick else 10_000
    rows.append(
        alternate(
            f"thread execute with retry=Retry(), success [{loop_name}]",
            "us/call",
            "lower",
            lambda: _run(factory, retry_us(True, calls)),
            "the same call without retry",
            lambda: _run(factory, retry_us(False, calls)),
            runs,
            target="ratio <= 1.05",
        )
    )
    return rows


def _loky() -> Any:
    import loky

    return loky.get_reusable_executor(max_workers=1)


if __name__ == "__main__":
    main()
