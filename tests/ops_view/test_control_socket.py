"""The control socket over real unix sockets: permissions, protocol, bad clients, stale files."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps import socket_dir

import aiotp
from aiotp.ops import control
from aiotp.ops.control import serve_control
from aiotp.ops.control_client import ControlClient
from aiotp.ops.control_protocol import (
    MAX_REQUEST,
    ControlProtocolError,
    ControlUnavailable,
    RemoteError,
    SocketInUse,
)

EOF_DEADLINE = 10.0  # seconds to wait for the server to hang up on a client it must drop


@pytest.fixture
def path() -> Iterator[Path]:
    with socket_dir() as d:
        yield d / "ctl.sock"


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> Any:
    writer.write(line)
    await writer.drain()
    return json.loads(await asyncio.wait_for(reader.readline(), EOF_DEADLINE))


async def test_owner_only_socket_answers_snapshot_and_ping_and_close_removes_it(
    rt: aiotp.Runtime, path: Path
) -> None:
    server = await serve_control(rt, path)
    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert server.tcp_port is None  # no TCP unless asked
    reader, writer = await asyncio.open_unix_connection(str(path))
    reply = await ask(reader, writer, b'{"op": "snapshot"}\n')
    assert reply["ok"] is True and reply["result"]["name"] == rt.name
    assert reply["result"]["state"] == "RUNNING"
    reply = await ask(reader, writer, b'{"op": "ping"}\n')
    assert reply == {"ok": True, "result": {"name": rt.name, "pid": os.getpid()}}
    await server.close()
    # The client still connected was dropped, and the file is gone.
    assert await asyncio.wait_for(reader.read(), EOF_DEADLINE) == b""
    writer.close()
    assert not path.exists()
    await server.close()  # idempotent


async def test_bad_requests_get_error_replies_and_the_connection_stays_usable(
    rt: aiotp.Runtime, path: Path
) -> None:
    async with await serve_control(rt, path):
        reader, writer = await asyncio.open_unix_connection(str(path))
        for garbage, says in (
            (b"hello\n", "not a JSON line"),
            (b"\xff\xfe\x00\n", "not a JSON line"),
            (b"[1, 2]\n", "must be a JSON object"),
            (b'{"op": "shutdown"}\n', "unknown op 'shutdown'"),
            (b'{"no": "op"}\n', "unknown op None"),
            (b'{"op": "snapshot", "max_children": 0}\n', "max_children must be a positive int"),
            (b'{"op": "snapshot", "max_children": "3"}\n', "max_children must be a positive"),
        ):
            reply = await ask(reader, writer, garbage)
            assert reply["ok"] is False and reply["error"]["type"] == "BadRequest"
            assert says in reply["error"]["message"]
        reply = await ask(reader, writer, b'{"op": "snapshot", "max_children": 1}\n')
        assert reply["ok"] is True and reply["result"]["name"] == rt.name
        writer.write(b"\n  \n")  # blank lines are skipped, not answered
        reply = await ask(reader, writer, b'{"op": "ping"}\n')
        assert reply["ok"] is True
        writer.close()


async def test_an_overlong_request_is_refused_and_only_its_client_is_dropped(
    rt: aiotp.Runtime, path: Path
) -> None:
    async with await serve_control(rt, path):
        other_r, other_w = await asyncio.open_unix_connection(str(path))
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"x" * (MAX_REQUEST + 10))
        reply = json.loads(await asyncio.wait_for(reader.readline(), EOF_DEADLINE))
        assert reply["error"]["type"] == "BadRequest" and "over" in reply["error"]["message"]
        assert await asyncio.wait_for(reader.read(), EOF_DEADLINE) == b""
        writer.close()
        assert (await ask(other_r, other_w, b'{"op": "ping"}\n'))["ok"] is True
        other_w.close()


async def test_silent_and_vanishing_clients_do_not_hurt_the_server(
    rt: aiotp.Runtime, path: Path
) -> None:
    async with await serve_control(rt, path, idle_timeout=0.2) as server:
        silent_r, silent_w = await asyncio.open_unix_connection(str(path))
        _, half_w = await asyncio.open_unix_connection(str(path))
        half_w.write(b'{"op": "snap')  # leaves in the middle of a request
        await half_w.drain()
        half_w.close()
        _, gone_w = await asyncio.open_unix_connection(str(path))
        gone_w.close()  # connects and leaves at once
        # The silent one is hung up on after idle_timeout; the server serves on.
        assert await asyncio.wait_for(silent_r.read(), EOF_DEADLINE) == b""
        silent_w.close()
        reader, writer = await asyncio.open_unix_connection(str(path))
        assert (await ask(reader, writer, b'{"op": "snapshot"}\n'))["ok"] is True
        writer.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EOF_DEADLINE
        while server.clients and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert server.clients == 0


async def test_many_clients_at_once_and_one_past_the_limit_is_told_so(
    rt: aiotp.Runtime, path: Path
) -> None:
    async with await serve_control(rt, path):

        async def client() -> int:
            reader, writer = await asyncio.open_unix_connection(str(path))
            ok = 0
            for _ in range(3):
                ok += (await ask(reader, writer, b'{"op": "snapshot"}\n'))["ok"]
            writer.close()
            return ok

        assert await asyncio.gather(*(client() for _ in range(20))) == [3] * 20

    async with await serve_control(rt, path, max_clients=2):
        held = [await asyncio.open_unix_connection(str(path)) for _ in range(2)]
        for reader, writer in held:
            assert (await ask(reader, writer, b'{"op": "ping"}\n'))["ok"] is True
        reader, writer = await asyncio.open_unix_connection(str(path))
        reply = json.loads(await asyncio.wait_for(reader.readline(), EOF_DEADLINE))
        assert reply["error"]["type"] == "Busy"
        assert await asyncio.wait_for(reader.read(), EOF_DEADLINE) == b""
        for _, w in [*held, (reader, writer)]:
            w.close()


async def test_a_stale_socket_is_replaced_and_a_live_one_or_a_file_is_refused(
    rt: aiotp.Runtime, path: Path
) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a SIGKILLed server leaves
    async with await serve_control(rt, path):
        with pytest.raises(SocketInUse, match="already listening"):
            await serve_control(rt, path)
        # The refused second server took nothing from the first one.
        assert os.path.exists(path)
        assert (await asyncio.to_thread(ControlClient(path).ping))["pid"] == os.getpid()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(SocketInUse, match="not a socket"):
        await serve_control(rt, path)
    assert path.read_text() == "not a socket"


async def test_tcp_is_served_only_when_asked_and_on_localhost_only(
    rt: aiotp.Runtime, path: Path
) -> None:
    async with await serve_control(rt, path, tcp_port=0) as server:
        assert server.tcp_port is not None and server.tcp_port > 0
        reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
        assert (await ask(reader, writer, b'{"op": "ping"}\n'))["ok"] is True
        assert writer.get_extra_info("sockname")[0] == "127.0.0.1"
        writer.close()
    with pytest.raises(ValueError, match="tcp_port"):
        await serve_control(rt, path, tcp_port=70000)


async def test_a_failing_snapshot_is_an_error_reply_not_a_dead_server(
    rt: aiotp.Runtime, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(_rt: Any, **_options: Any) -> Any:
        raise RuntimeError("snapshot bug")

    async with await serve_control(rt, path):
        monkeypatch.setattr(control, "snapshot_async", broken)
        reader, writer = await asyncio.open_unix_connection(str(path))
        reply = await ask(reader, writer, b'{"op": "snapshot"}\n')
        assert reply["error"] == {"type": "RuntimeError", "message": "snapshot bug"}
        assert (await ask(reader, writer, b'{"op": "ping"}\n'))["ok"] is True
        writer.close()


async def test_the_blocking_client_names_each_failure(rt: aiotp.Runtime, path: Path) -> None:
    with pytest.raises(ControlUnavailable, match="no control socket"):
        ControlClient(path).ping()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with pytest.raises(ControlUnavailable, match="nobody is listening"):
        ControlClient(path).ping()
    os.unlink(path)

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 400 Bad Request\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(impostor, str(path))
    try:
        with pytest.raises(ControlProtocolError, match="non-JSON"):
            await asyncio.to_thread(ControlClient(path).ping)
    finally:
        server.close()
        await server.wait_closed()
        os.unlink(path)
    async with await serve_control(rt, path):
        with ControlClient(path) as client:
            with pytest.raises(RemoteError, match="BadRequest"):
                await asyncio.to_thread(client.request, "reboot")
            snap = await asyncio.to_thread(client.snapshot)  # the same connection serves on
            assert snap["name"] == rt.name
