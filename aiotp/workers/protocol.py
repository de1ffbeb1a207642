"""The worker wire protocol: length-prefixed msgpack frames over a socketpair.

A frame is a 4-byte big-endian length followed by a msgpack array whose first two elements are
the frame kind and a correlation id::

    REQUEST [0, id, tool, args(, session_id, settings)]   parent -> worker; settings None:
                                       unchanged since that session's last request here
    REPLY   [1, id, result]            worker -> parent
    ERROR   [2, id, kind, type, message, traceback]   kind: "unknown_tool" | "tool_error"
    ITEM    [3, id, value]             one item of a streaming (generator) tool
    END     [4, id]                    the stream is over
    CANCEL  [5, id]                    parent -> worker: stop that stream
    PING    [6, id] / PONG [7, id]     heartbeats, answered by the worker's execution lane
    READY   [8, 0, pid, tools, threads, idempotent_tools]   sent once after setup()
    STOP    [9, 0]                     parent -> worker: finish, teardown(), exit 0
    FAILED  [10, 0, type, message, traceback]   setup or import failed; the worker exits
    CREDIT  [11, id, n]                parent -> worker: the caller took n more items of a stream
    DROP    [12, 0, session_id]        parent -> worker: the session ended or moved: drop its state

Streams are flow-controlled (credit.py): a worker may send at most ``WINDOW`` (64) ITEM frames of
a stream beyond those credited back by CREDIT frames, which the caller sends every 32 items it
takes. A worker out of credit waits, still answering PING and honouring CANCEL; CREDIT for a
stream that is over is ignored.

Only msgpack types cross the wire (no pickle, ever): `pack` refuses anything else with
`SerializationError` before a byte is written. Frames above ``max_frame`` bytes (default 64 MiB)
are refused on both sides; a worker that sends one, or garbage, is killed as a protocol breaker.
"""

from __future__ import annotations

import _thread
import struct

import msgpack

from aiotp.workers.errors import ProtocolError, SerializationError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in a worker process
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FrameReader", "pack", "request_frame", "unpack_body"]

REQUEST, REPLY, ERROR, ITEM, END, CANCEL, PING, PONG, READY, STOP, FAILED, CREDIT, DROP = range(13)
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")
# One Packer per thread, reused: msgpack.packb builds a new Packer on every call, which was a
# fifth of the cost of a frame. Packers are not thread-safe, hence thread-local.
_local = _thread._local()  # threading.local, without importing threading


def _packer() -> Any:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, datetime=False)
    return packer


def pack(frame: list[Any], max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Encode one frame; `SerializationError` names what msgpack cannot carry."""
    try:
        body: bytes = _packer().pack(frame)
    except (TypeError, ValueError, OverflowError) as exc:
        _local.packer = None  # a failed pack may leave the packer's buffer dirty
        target = frame[3] if frame and frame[0] == REQUEST and len(frame) > 3 else frame
        raise SerializationError(
            f"cannot send {_describe_unserialisable(target)}: {exc} (only msgpack types - None, "
            "bool, int, float, str, bytes, list, tuple, dict - cross the wire)"
        ) from None
    if len(body) > max_frame:
        raise SerializationError(f"frame of {len(body)} bytes exceeds max_frame={max_frame}")
    return _HEADER.pack(len(body)) + body


def unpack_body(body: bytes | memoryview) -> list[Any]:
    try:
        frame = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:
        raise ProtocolError(f"malformed frame: {exc}") from None
    if not isinstance(frame, list) or len(frame) < 2 or not isinstance(frame[0], int):
        raise ProtocolError(f"malformed frame: {frame!r:.200}")
    return frame


class FrameReader:
    """Incremental decoder: feed bytes as they come, get whole frames out."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[list[Any]]:
        """Every whole frame now in the buffer (ProtocolError on an oversized or bad one)."""
        buf = self._buf
        if not buf and len(data) >= 4:
            # Fast path: exactly one whole frame and nothing pending (a lone request or reply)
            # is decoded straight from `data`, without copying it into the buffer.
            (size,) = _HEADER.unpack_from(data, 0)
            if size + 4 == len(data) and size <= self.max_frame:
                return [unpack_body(data[4:])]
        buf += data
        frames: list[list[Any]] = []
        pos = 0
        end = len(buf)
        with memoryview(buf) as view:
            while end - pos >= 4:
                (size,) = _HEADER.unpack_from(buf, pos)
                if size > self.max_frame:
                    raise ProtocolError(
                        f"frame of {size} bytes announced, above max_frame={self.max_frame}"
                    )
                if end - pos - 4 < size:
                    break
                start = pos + 4
                pos = start + size
                frames.append(unpack_body(view[start:pos]))
        if pos:
            del buf[:pos]
        return frames


def _describe_unserialisable(value: Any, path: str = "args") -> str:
    """The first value msgpack cannot carry, with where it is: ``args['x'][2]: object``."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return f"{path}: {type(value).__name__}"
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _describe_unserialisable(item, f"{path}[{i}]")
            if not found.endswith(_OK_TYPES):
                return found
        return f"{path}: {type(value).__name__}"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | bytes | float | bool) and key is not None:
                return f"{path} key {key!r}: {type(key).__name__}"
            found = _describe_unserialisable(item, f"{path}[{key!r}]")
            if not found.endswith(_OK_TYPES):
                return found
        return f"{path}: dict"
    return f"{path}: a {type(value).__module__}.{type(value).__qualname__}"


_OK_TYPES = (
    ": NoneType",
    ": bool",
    ": int",
    ": float",
    ": str",
    ": bytes",
    ": list",
    ": tuple",
    ": dict",
)


def request_frame(
    rid: int, tool: str, args: dict[str, Any], session: list[Any] | None
) -> list[Any]:
    """A REQUEST frame (its body, for `pack`), for process and Ray workers alike. ``session`` is
    ``[session_id, settings]``; the settings are checked here, so that metadata msgpack cannot
    carry fails with a message naming the session rather than the request."""
    if session is None:
        return [REQUEST, rid, tool, args]
    if session[1] is not None:
        try:
            pack([session[1]])  # only when they are sent: when they changed
        except SerializationError as exc:
            raise SerializationError(
                f"session {session[0]!r}: its settings (the session's metadata) cannot cross "
                f"the wire to a worker: {exc}"
            ) from None
    return [REQUEST, rid, tool, args, session[0], session[1]]
