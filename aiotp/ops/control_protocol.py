"""The control socket's wire format, and the errors of both ends.

Newline-delimited JSON, one request line, one reply line, in order, on one connection::

    -> {"op": "snapshot"}
    <- {"ok": true, "result": {...the snapshot...}}
    -> {"op": "nope"}
    <- {"ok": false, "error": {"type": "BadRequest", "message": "unknown op 'nope' (ops: ...)"}}

Why this and not HTTP or msgpack: ``socat - UNIX:app.sock`` and ``nc -U`` are enough to ask by
hand, any language can speak it, and a snapshot is JSON already. A request is at most
`MAX_REQUEST` bytes (a longer line is refused and the connection closed, since the server cannot
find the next request's start); a reply at most `MAX_REPLY`.

Ops: ``snapshot`` (the result is `aiotp.ops.snapshot_types.Snapshot`; ``"max_children": N``
lists at most N children per node, counting the rest, as ``aiotp top`` asks) and ``ping``
(``{"name", "pid"}``: is anyone there, and who).

This module imports no runtime: the command line's ``aiotp tree`` loads only it and the view.
"""

from __future__ import annotations

import json
from typing import Any

from aiotp.errors import AiotpError

__all__ = [
    "MAX_REPLY",
    "MAX_REQUEST",
    "OPS",
    "BadRequest",
    "ControlError",
    "ControlProtocolError",
    "ControlUnavailable",
    "RemoteError",
    "SocketInUse",
    "decode_reply",
    "encode_error",
    "encode_reply",
    "encode_request",
    "parse_request",
]

MAX_REQUEST = 64 * 1024  # requests are tiny; a bigger line is garbage or an attack
MAX_REPLY = 64 * 1024 * 1024  # a snapshot of a very large system (a few MiB per 10k actors)
OPS = ("ping", "snapshot")


class ControlError(AiotpError):
    """Base of the control socket's errors."""


class SocketInUse(ControlError):
    """A live server already listens on that path (or it is not a socket): nothing was
    replaced, the other server keeps running. Pick another path or stop the other one."""


class ControlUnavailable(ControlError):
    """Nobody answers on that path (no socket file, nobody listening, the connection dropped,
    or no reply in time). The application may be stopped, starting, or somewhere else."""


class ControlProtocolError(ControlError):
    """The other end sent something that is not this protocol (not JSON, not an object, too
    long). Its fault, not yours; the connection is of no further use."""


class BadRequest(ControlError):
    """Server side: a request line that is not a JSON object with a known ``op``. The client
    gets an error reply and the connection stays usable."""


class RemoteError(ControlError):
    """Client side: the server answered with an error reply (``type`` and ``message`` are its
    words). The server is fine and the connection stays usable."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


def encode_request(op: str, **args: Any) -> bytes:
    return _line({"op": op, **args})


def parse_request(line: bytes) -> dict[str, Any]:
    """The request in `line` (without or with its newline); `BadRequest` naming what is wrong."""
    try:
        request = _loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"not a JSON line: {_preview(line)} ({exc})") from None
    except RecursionError:  # nested deeper than the decoder can go: garbage or an attack
        raise BadRequest(f"a JSON line nested too deep: {_preview(line)}") from None
    if not isinstance(request, dict):
        raise BadRequest(f"a request must be a JSON object, got {type(request).__name__}")
    op = request.get("op")
    if op not in OPS:
        raise BadRequest(f"unknown op {op!r} (ops: {', '.join(OPS)})")
    return request


def encode_reply(result: Any) -> bytes:
    return _line({"ok": True, "result": result})


def encode_error(type_name: str, message: str) -> bytes:
    return _line({"ok": False, "error": {"type": type_name, "message": message}})


def decode_reply(line: bytes) -> Any:
    """The result in a reply line; `RemoteError` for an error reply, `ControlProtocolError`
    for anything that is not a reply of this protocol."""
    try:
        reply = _loads(line)
    except (UnicodeDecodeError, ValueError):
        raise ControlProtocolError(f"the server sent a non-JSON line: {_preview(line)}") from None
    except RecursionError:
        raise ControlProtocolError(
            f"the server sent a JSON line nested too deep: {_preview(line)}"
        ) from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlProtocolError(
            f"the server sent a JSON line that is no reply: {_preview(line)}"
        )
    if reply["ok"]:
        return reply.get("result")
    error = reply.get("error")
    if not isinstance(error, dict):
        raise ControlProtocolError(f"an error reply without an error: {_preview(line)}")
    raise RemoteError(str(error.get("type", "Error")), str(error.get("message", "")))


def _loads(line: bytes) -> Any:
    """JSON without NaN and Infinity (ValueError), as `_line` writes it: a number the view
    would have to render must be finite."""
    return json.loads(line, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _line(obj: Any) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON; a client in another language would choke.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _preview(line: bytes) -> str:
    return repr(line[:80]) + ("..." if len(line) > 80 else "")
