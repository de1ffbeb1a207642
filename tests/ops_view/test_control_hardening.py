"""The control socket, its client and the views against hostile input and odd lives: requests
and replies nested too deep or not finite, a server its application forgot to close, a
connection the server dropped while the client idled, a deep chain of linked actors."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import socket_dir
from helpers import wait_until
from rich.console import Console

import aiotp
from aiotp.ops import view
from aiotp.ops.control import serve_control
from aiotp.ops.control_client import ControlClient
from aiotp.ops.control_protocol import ControlProtocolError, decode_reply
from aiotp.ops.render import render
from aiotp.ops.snapshot import MAX_DEPTH, snapshot

DEADLINE = 10.0
IDLE = 20.0  # a client's idle timeout that no test should wait out


@pytest.fixture
def path() -> Iterator[Path]:
    with socket_dir() as d:
        yield d / "ctl.sock"


async def test_a_request_nested_too_deep_is_a_bad_request_and_the_connection_stays(
    rt: aiotp.Runtime, path: Path
) -> None:
    async with await serve_control(rt, path):
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"[" * 60000 + b"\n" + b'{"op": "ping"}\n')
        await writer.drain()
        first = json.loads(await asyncio.wait_for(reader.readline(), DEADLINE))
        second = json.loads(await asyncio.wait_for(reader.readline(), DEADLINE))
        writer.close()
    assert first["ok"] is False and first["error"]["type"] == "BadRequest"
    assert "too deep" in first["error"]["message"]
    assert second["ok"] is True and second["result"]["name"] == rt.name


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("end", ["return", "raise"])
def test_a_server_left_open_with_a_client_connected_closes_with_its_runtime(
    path: Path, loop: str, end: str
) -> None:
    """No ERROR from asyncio per client (the autouse fixture fails on one), no file left."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    servers: list[Any] = []

    async def main(rt: aiotp.Runtime) -> None:
        servers.append(await serve_control(rt, path, idle_timeout=IDLE))
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"op": "ping"}\n')
        await writer.drain()
        assert json.loads(await reader.readline())["ok"] is True
        if end == "raise":
            raise RuntimeError("the application's bug")

    began = time.monotonic()
    if end == "raise":
        with pytest.raises(RuntimeError, match="application's bug"):
            aiotp.run(main, uvloop=loop == "uvloop")
    else:
        aiotp.run(main, uvloop=loop == "uvloop")
    # The client was cut off by the close, not by its idle timeout (a cancel lost in wait_for).
    assert time.monotonic() - began < IDLE
    assert not path.exists()
    assert servers[0].clients == 0 and "CLOSED" in repr(servers[0])


async def test_the_client_asks_again_on_a_fresh_connection_after_an_idle_drop(
    rt: aiotp.Runtime, path: Path
) -> None:
    async with await serve_control(rt, path, idle_timeout=0.05) as server:
        client = ControlClient(path, timeout=DEADLINE)
        try:
            assert (await asyncio.to_thread(client.ping))["name"] == rt.name
            await wait_until(lambda: server.clients == 0, timeout=DEADLINE)  # dropped as idle
            assert (await asyncio.to_thread(client.ping))["name"] == rt.name
        finally:
            client.close()


class FakeServer:
    """A unix server that answers every request line with one fixed reply."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                try:
                    while lines.readline():
                        conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(DEADLINE)


def _result(body: bytes) -> bytes:
    return b'{"ok":true,"result":' + body + b"}\n"


ODD_REPLIES = {
    "deep": b"[" * 100000 + b"\n",
    "deep_result": _result(b'{"a":' * 3000 + b"1" + b"}" * 3000),
    "inf_uptime": _result(b'{"name":"x","uptime":Infinity,"tree":[],"pools":[]}'),
    "nan_time": _result(b'{"name":"x","time":NaN,"tree":[],"pools":[]}'),
    "huge_time": _result(b'{"name":"x","time":1e300,"tree":[],"pools":[]}'),
    "latency_int": _result(b'{"name":"x","pools":[{"name":"p","latency":5}],"tree":[]}'),
    "mailbox_big": _result(b'{"name":"x","tree":[{"class":"A","mailbox":1e400}],"pools":[]}'),
    "uptime_neg": _result(b'{"name":"x","uptime":-1e30,"tree":[],"pools":[]}'),
    "error_reply": b'{"ok":false,"error":{"type":"Boom","message":"no snapshot"}}\n',
}


@pytest.mark.parametrize("mode", sorted(ODD_REPLIES))
def test_tree_answers_odd_replies_with_one_line_or_a_picture(
    path: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server = FakeServer(path, ODD_REPLIES[mode])
    try:
        status = view.tree_command(argparse.Namespace(socket=str(path), json=False))
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if status == 1:
        assert len(err.strip().splitlines()) == 1 and err.startswith("aiotp tree: ")
        # The application answered: the hint about a socket nobody serves would mislead.
        assert "--control-socket" not in err
    else:
        assert status == 0 and "supervision tree of x" in out, (out, err)
    if mode in ("deep", "deep_result", "inf_uptime", "nan_time", "error_reply"):
        assert status == 1


def test_tree_on_a_socket_nobody_serves_gives_the_hint(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert view.tree_command(argparse.Namespace(socket=str(path), json=False)) == 1
    assert "--control-socket" in capsys.readouterr().err


def test_a_reply_that_is_not_finite_or_too_deep_is_a_protocol_error() -> None:
    for line in (b'{"ok":true,"result":NaN}\n', b'{"ok":true,"result":-Infinity}\n'):
        with pytest.raises(ControlProtocolError):
            decode_reply(line)
    with pytest.raises(ControlProtocolError, match="too deep"):
        decode_reply(b"[" * 100000 + b"\n")


def test_render_draws_fields_of_the_wrong_type() -> None:
    snap: dict[str, Any] = {
        "name": "x",
        "time": 1e300,
        "uptime": float("inf"),
        "pools": [{"name": "p", "latency": 5, "queue_wait": [1], "workers": [{"uptime": -1.0}]}],
        "sessions": {"by_state": [1, 2]},
        "tree": [{"class": "A", "mailbox": float("nan"), "restarts": float("inf")}],
    }
    console = Console(file=sys.stdout, width=160)
    with console.capture() as capture:
        console.print(render(snap))
    assert "supervision tree of x" in capture.get()


class Link(aiotp.Actor):
    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        return await self.runtime.spawn(Link, link=True)


async def test_a_chain_of_linked_actors_deeper_than_the_recursion_limit(
    rt: aiotp.Runtime, path: Path
) -> None:
    depth = sys.getrecursionlimit() + 200
    ref = await rt.spawn(Link)
    for _ in range(depth - 1):
        ref = await ref.call("grow")
    snap = snapshot(rt)
    levels, node = 1, snap["tree"][0]
    while node["children"]:
        levels, node = levels + 1, node["children"][0]
    assert levels == MAX_DEPTH and node["more"]["count"] == 1  # the rest is counted, not listed
    # It crosses the socket, and the views draw it.
    async with await serve_control(rt, path):
        client = ControlClient(path, timeout=DEADLINE)
        try:
            remote = await asyncio.to_thread(client.snapshot)
        finally:
            client.close()
    assert remote["actors"] == depth
    console = Console(file=sys.stdout, width=160)
    with console.capture():
        await asyncio.to_thread(console.print, render(remote))
