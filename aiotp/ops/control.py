"""The control socket: a running application answers `snapshot` requests on a unix socket.

``aiotp top`` and ``aiotp tree`` (aiotp.ops.view) ask it for the picture they draw. It is not an
admin API: it can only be read (no op changes anything), which is why a local, owner-only socket
is enough protection and nothing else is needed::

    server = await aiotp.ops.control.serve_control(rt, "/run/app/control.sock")
    ...                                   # $ aiotp tree --socket /run/app/control.sock
    await server.close()                  # stops serving and removes the socket file

Wire format: newline-delimited JSON, one reply line per request line (`control_protocol`).

Guarantees and defaults:
- The socket file is created owner-only (mode 0600; set after bind and before listen, so no
  connection is accepted before it holds). No TCP port unless ``tcp_port=`` is given, and then
  on 127.0.0.1 only (0 picks a free port: `ControlServer.tcp_port`).
- A stale socket file (nobody listening: a crashed earlier run) is replaced. A path where a live
  server listens, or that is not a socket, raises `SocketInUse` and is left alone.
- A bad request (not JSON, not an object, unknown op) gets an error reply and the connection
  stays usable; a request line over 64 KiB gets an error reply and the connection is closed
  (the next request's start cannot be found). Neither touches the server.
- Many clients at once (``max_clients=64``; the one past it gets an error reply and is closed).
  A client that sends nothing for ``idle_timeout=30`` s, or leaves mid-request, is dropped; one
  that does not read its replies for ``write_timeout=10`` s is dropped. None of that is logged
  above DEBUG: it is the client's business.
- `close()` is idempotent: it stops accepting, drops the clients, and removes the socket file
  if it is still ours (a file another server put at the path since is left alone, and a
  relative path is removed where it was made, whatever the working directory is now). The
  runtime's shutdown closes the server too, so one its application forgot does not outlive it.
- The socket file appears at the path only once it accepts (it is made under a temporary name
  and linked into place, which never replaces a file): two servers started at once on one path
  cannot both win.
- Every reply is built on the runtime's loop between two messages (`aiotp.ops.snapshot`): the
  tree and the pools are one consistent moment, at any point of the application's life. A
  session store that must be awaited (Redis) is read just after, within 1 s; past that the
  reply's ``sessions`` carries an error and the rest of the picture is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import secrets
import socket
import stat
from typing import TYPE_CHECKING, Any

from aiotp.ops.control_protocol import (
    MAX_REQUEST,
    BadRequest,
    ControlError,
    SocketInUse,
    encode_error,
    encode_reply,
    parse_request,
)
from aiotp.ops.snapshot import snapshot_async

if TYPE_CHECKING:
    from aiotp.runtime.runtime import Runtime

__all__ = ["ControlServer", "serve_control"]

_log = logging.getLogger("aiotp.ops.control")


class _CloseAtShutdown:
    """The runtime's handle on a server (a runtime extension: closed at its shutdown)."""

    def __init__(self, server: ControlServer) -> None:
        self.server = server

    async def close(self) -> None:
        await self.server.close()


class _Phase(enum.Enum):
    NEW = "NEW"
    SERVING = "SERVING"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"


_MOVES = {
    _Phase.NEW: {_Phase.SERVING, _Phase.CLOSED},
    _Phase.SERVING: {_Phase.CLOSING},
    _Phase.CLOSING: {_Phase.CLOSED},
    _Phase.CLOSED: set(),
}


class ControlServer:
    """Serves a runtime's snapshot on a unix socket (see the module docstring)."""

    def __init__(
        self,
        rt: Runtime,
        path: str | os.PathLike[str],
        *,
        tcp_port: int | None = None,
        idle_timeout: float = 30.0,
        write_timeout: float = 10.0,
        max_clients: int = 64,
    ) -> None:
        if tcp_port is not None and (
            not isinstance(tcp_port, int) or isinstance(tcp_port, bool) or not 0 <= tcp_port < 65536
        ):
            raise ValueError(f"tcp_port must be an int in 0..65535 or None, got {tcp_port!r}")
        for what, value in (("idle_timeout", idle_timeout), ("write_timeout", write_timeout)):
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
        if not isinstance(max_clients, int) or max_clients < 1:
            raise ValueError(f"max_clients must be a positive int, got {max_clients!r}")
        self.rt = rt
        self.path = os.fspath(path)
        self._abspath = os.path.abspath(self.path)  # bind the path as given (length limit)
        self.idle_timeout = float(idle_timeout)
        self.write_timeout = float(write_timeout)
        self.max_clients = max_clients
        self._want_tcp = tcp_port
        self.tcp_port: int | None = None  # the bound port, once serving
        self._phase = _Phase.NEW
        self._servers: list[asyncio.AbstractServer] = []
        self._clients: set[asyncio.Task[Any]] = set()
        self._inode: tuple[int, int] | None = None  # (st_dev, st_ino) of our socket file

    def _move(self, new: _Phase) -> None:
        if new not in _MOVES[self._phase]:
            raise ControlError(f"control server cannot go from {self._phase.name} to {new.name}")
        self._phase = new

    def __repr__(self) -> str:
        tcp = f" tcp=127.0.0.1:{self.tcp_port}" if self.tcp_port is not None else ""
        return f"<ControlServer {self.path!r}{tcp} {self._phase.name} clients={self.clients}>"

    @property
    def clients(self) -> int:
        """Connections open now."""
        return len(self._clients)

    async def start(self) -> None:
        """Bind and serve; `SocketInUse` or `ControlError` (naming the path) if it cannot."""
        self._move(_Phase.SERVING)
        try:
            sock = _bind_unix(self.path)
            st = os.stat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            self._servers.append(
                await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)
            )
            if self._want_tcp is not None:
                tcp = await asyncio.start_server(
                    self._serve, host="127.0.0.1", port=self._want_tcp, limit=MAX_REQUEST
                )
                self._servers.append(tcp)
                self.tcp_port = tcp.sockets[0].getsockname()[1]
        except BaseException:
            await self.close()
            raise
        # Closed at the runtime's shutdown (extensions are closed after the actors stop).
        self.rt._extensions[self._key] = _CloseAtShutdown(self)
        _log.debug("control socket serving on %s", self.path)

    @property
    def _key(self) -> str:
        return f"aiotp.control/{id(self):#x}"

    async def close(self) -> None:
        """Stop serving, drop the clients, remove our socket file; idempotent."""
        if self._phase in (_Phase.CLOSING, _Phase.CLOSED):
            return
        if self._phase is _Phase.SERVING:
            self._move(_Phase.CLOSING)
        for server in self._servers:
            server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        if clients:
            await asyncio.gather(*clients, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._unlink_ours()
        self.rt._extensions.pop(self._key, None)
        self._move(_Phase.CLOSED)

    async def __aenter__(self) -> ControlServer:
        if self._phase is _Phase.NEW:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _unlink_ours(self) -> None:
        if self._inode is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self._abspath)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self._abspath)
        self._inode = None

    # -- one connection ------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if self._phase is not _Phase.SERVING or len(self._clients) > self.max_clients:
                busy = f"too many clients ({self.max_clients}); try again later"
                await self._send(writer, encode_error("Busy", busy))
                return
            await self._converse(reader, writer)
        except (ConnectionError, TimeoutError) as exc:
            _log.debug("control client dropped: %r", exc)
        except asyncio.CancelledError:
            # Never re-raised, even when it is not our close (a loop torn down with us still
            # serving): the streams callback of Python 3.11 then calls `task.exception()` on a
            # cancelled task and logs an ERROR per client. Nobody awaits this task but `close`.
            _log.debug("control client dropped: the server or its loop is closing")
        except Exception:  # a client must never get a traceback into the application's log
            _log.debug("control client handler failed", exc_info=True)
        finally:
            self._clients.discard(task)
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel that
                # comes as the read completes, and `close` would then wait out the idle timeout.
                async with asyncio.timeout(self.idle_timeout):
                    line = await reader.readline()
            except ValueError:  # longer than the stream's limit: no way to find the next line
                await self._send(
                    writer, encode_error("BadRequest", f"request over {MAX_REQUEST} bytes")
                )
                return
            if not line.endswith(b"\n"):
                return  # EOF, at a line's start or in the middle of one: the client left
            if line.strip():
                await self._send(writer, await self._answer(line))

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        async with asyncio.timeout(self.write_timeout):
            await writer.drain()

    async def _answer(self, line: bytes) -> bytes:
        try:
            request = parse_request(line)
        except BadRequest as exc:
            _log.debug("control socket: bad request: %s", exc)
            return encode_error("BadRequest", str(exc))
        cap = request.get("max_children")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            return encode_error("BadRequest", f"max_children must be a positive int, got {cap!r}")
        try:
            if request["op"] == "ping":
                return encode_reply({"name": self.rt.name, "pid": os.getpid()})
            return encode_reply(await snapshot_async(self.rt, max_children=cap))
        except Exception as exc:  # a bug in the snapshot: tell the client, keep serving
            _log.warning("control socket: %r failed", request["op"], exc_info=True)
            return encode_error(type(exc).__name__, str(exc))


async def serve_control(
    rt: Runtime, path: str | os.PathLike[str], *, tcp_port: int | None = None, **options: Any
) -> ControlServer:
    """Start a `ControlServer` for `rt` on `path` and return it once it serves.

    `options`: ``idle_timeout``, ``write_timeout``, ``max_clients`` (see the module docstring).
    """
    server = ControlServer(rt, path, tcp_port=tcp_port, **options)
    await server.start()
    return server


def _bind_unix(path: str) -> socket.socket:
    """A listening unix socket at `path`, mode 0600, replacing a stale socket file.

    Bound and listening under a temporary name first, then hard-linked to `path` (a link never
    replaces a file): the path never names a socket that refuses connections, which a server
    starting at the same moment would take for stale and remove."""
    tmp = os.path.join(os.path.dirname(path), f".aiotp-{secrets.token_hex(4)}.sock")
    if max(len(os.fsencode(tmp)), len(os.fsencode(path))) > _MAX_PATH:
        # Bound directly: a path too long fails at bind as it should (a link would take it,
        # and no client could connect), one that fits where the temporary name would not works.
        tmp = path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if tmp == path:
            _clear_stale(path)
        try:
            sock.bind(tmp)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:  # bound by another server since our probe
                raise SocketInUse(f"control socket {path!r}: {exc}") from None
            raise ControlError(f"cannot create the control socket {path!r}: {exc}") from None
        try:
            # Before listen(): until then a connect is refused, so nobody gets in before the
            # mode holds. Unlike the umask, chmod does not touch other threads' file creation.
            os.chmod(tmp, 0o600)
            sock.listen(128)
            if tmp != path:
                _clear_stale(path)
                _link(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise ControlError(f"cannot set up the control socket {path!r}: {exc}") from None
            raise
        if tmp != path:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # the path is a second name of the same socket
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


_MAX_PATH = 108  # bytes of a unix socket path (sun_path; Linux needs no NUL)


def _link(tmp: str, path: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise SocketInUse(f"another server took the control socket {path!r} just now") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
            raise
        os.rename(tmp, path)  # a file system without hard links to sockets: replace instead


def _clear_stale(path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live one or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlError(f"cannot inspect the control socket path {path!r}: {exc}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"{path!r} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            now = os.lstat(path)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(path)  # stale: its server is gone (and it is the file we probed)
        _log.debug("replaced the stale control socket %s", path)
        return
    except OSError as exc:
        raise ControlError(f"cannot probe the control socket {path!r}: {exc}") from None
    finally:
        probe.close()
    raise SocketInUse(f"a server is already listening on the control socket {path!r}")
