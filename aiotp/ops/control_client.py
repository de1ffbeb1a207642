"""A blocking client of the control socket, for the command line (``aiotp top`` / ``tree``).

Blocking on purpose: a terminal view has nothing else to do while it waits for a reply, and
plain sockets keep Ctrl-C simple (KeyboardInterrupt wherever it lands). Imports no runtime.

::

    with ControlClient("/run/app/control.sock") as client:
        snap = client.snapshot()

Every failure is one of three typed errors (`aiotp.ops.control_protocol`): `ControlUnavailable`
(no socket, nobody listening, connection dropped, no reply within ``timeout=5`` s: the client
closes the connection and the next request reconnects), `ControlProtocolError` (the other end
does not speak this protocol) and `RemoteError` (the server answered with an error).
"""

from __future__ import annotations

import os
import socket
from typing import IO, TYPE_CHECKING, Any, cast

from aiotp.ops.control_protocol import (
    MAX_REPLY,
    ControlProtocolError,
    ControlUnavailable,
    decode_reply,
    encode_request,
)

if TYPE_CHECKING:
    from aiotp.ops.snapshot_types import Snapshot

__all__ = ["ControlClient", "fetch_snapshot"]


class ControlClient:
    """One connection to a control socket, opened on first use and reopened after a failure."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.path = os.fspath(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: IO[bytes] | None = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise ControlUnavailable(f"no control socket at {self.path}") from None
        except ConnectionRefusedError:
            sock.close()
            raise ControlUnavailable(
                f"nobody is listening on {self.path} (the application is gone)"
            ) from None
        except OSError as exc:
            sock.close()
            raise ControlUnavailable(f"cannot connect to {self.path}: {exc}") from None
        self._sock = sock
        self._file = sock.makefile("rb")

    def close(self) -> None:
        file, sock, self._file, self._sock = self._file, self._sock, None, None
        if file is not None:
            file.close()
        if sock is not None:
            sock.close()

    def request(self, op: str, **args: Any) -> Any:
        """Send one request and return its result (see the module docstring for errors).

        A connection kept from an earlier request may have been dropped by the server since
        (it drops clients idle for 30 s; ``aiotp top --interval 32``): when it fails before a
        byte of the reply came, the request is sent once more on a fresh connection. Every
        op only reads, so asking twice is harmless."""
        reused = self._sock is not None
        try:
            line = self._exchange(op, args)
        except _Dropped as dropped:
            if not reused:
                raise ControlUnavailable(str(dropped)) from None
            try:
                line = self._exchange(op, args)
            except _Dropped as again:
                raise ControlUnavailable(str(again)) from None
        try:
            return decode_reply(line)
        except ControlProtocolError:
            self.close()  # whatever is on the other end, it is not ours to talk to further
            raise

    def _exchange(self, op: str, args: dict[str, Any]) -> bytes:
        """One request line out, one reply line in; `_Dropped` when the connection failed
        before any byte of the reply."""
        self.connect()
        assert self._sock is not None and self._file is not None
        try:
            self._sock.sendall(encode_request(op, **args))
            line = self._file.readline(MAX_REPLY + 1)
        except TimeoutError:
            self.close()
            raise ControlUnavailable(f"no reply from {self.path} within {self.timeout} s") from None
        except OSError as exc:
            self.close()
            raise _Dropped(f"connection to {self.path} lost: {exc}") from None
        if not line.endswith(b"\n"):
            self.close()
            if len(line) > MAX_REPLY:
                raise ControlProtocolError(f"a reply from {self.path} over {MAX_REPLY} bytes")
            if not line:
                raise _Dropped(f"{self.path} closed the connection")
            raise ControlUnavailable(f"{self.path} closed the connection mid-reply")
        return line

    def ping(self) -> dict[str, Any]:
        return cast("dict[str, Any]", self.request("ping"))

    def snapshot(self, *, max_children: int | None = None) -> Snapshot:
        """The application's snapshot; ``max_children`` bounds the children listed per node."""
        args = {} if max_children is None else {"max_children": max_children}
        result = self.request("snapshot", **args)
        if not isinstance(result, dict):
            self.close()
            raise ControlProtocolError(f"{self.path} sent a snapshot that is not an object")
        return cast("Snapshot", result)


class _Dropped(Exception):
    """The connection failed before any byte of the reply (maybe one the server dropped)."""


def fetch_snapshot(
    path: str | os.PathLike[str], *, timeout: float = 5.0, max_children: int | None = None
) -> Snapshot:
    """One snapshot over a fresh connection."""
    with ControlClient(path, timeout=timeout) as client:
        return client.snapshot(max_children=max_children)
