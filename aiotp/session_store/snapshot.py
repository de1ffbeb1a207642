"""Snapshots: all live sessions to one msgpack file, atomically; and back, all or nothing.

File layout: the magic ``b"AIOTPSS1"``, a CRC-32 and a length of the body (big-endian, 4 + 8
bytes), then the msgpack body. The file is written to a temporary name in the same directory,
flushed to disk, and renamed over the target, so a crash mid-write leaves the old snapshot whole.
Restoring checks magic, length and checksum and validates every record before the first session
is adopted: a truncated or corrupt file raises `SnapshotError` and loads nothing.

A snapshot is consistent shard by shard (each shard is copied under its lock, see
`write_snapshot`), as `Table.select` is; no session is ever saved half-updated.

Timing survives the move between processes: a session is saved with its *remaining* TTL (monotonic
clocks differ from one process to the next) and restored with that much life left.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from typing import TYPE_CHECKING, Any

import msgpack

from aiotp.session_store.errors import SnapshotError
from aiotp.session_store.session import Session

if TYPE_CHECKING:
    from aiotp.session_store.store import SessionStore

__all__ = ["read_snapshot", "write_snapshot"]

MAGIC = b"AIOTPSS1"
_HEAD = struct.Struct(">IQ")
VERSION = 1


def write_snapshot(store: SessionStore, path: str | os.PathLike[str]) -> int:
    """Save every live session; returns how many. Consistent shard by shard, not globally.

    Each shard's records are built under that shard's lock, the dicts copied, so a shard is
    saved as of one instant and no session is saved half-updated; packing and disk I/O happen
    after every lock is released. Like `Table.select`, there is no instant at which the whole
    store is frozen: a session of another shard may change between two shards' copies.
    """
    now = store.clock()
    table = store._table
    records: list[dict[str, Any]] = []
    for i in range(table.shard_count):
        with table._locks[i]:
            records.extend(_record(s, now) for s in table._shards[i].values() if not s.expired(now))
    try:
        body = msgpack.packb({"version": VERSION, "sessions": records}, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"a session holds data msgpack cannot store: {exc}") from None
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".aiotp-snapshot-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + _HEAD.pack(zlib.crc32(body), len(body)) + body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(records)


def _record(s: Session, now: float) -> dict[str, Any]:
    return {
        "id": s.id,
        "ttl": s.ttl,
        "remaining": s.remaining(now),
        "created_at": s.created_at,
        "metadata": dict(s.metadata),
        "programs": dict(s.programs),
        "last_worker_id": s.last_worker_id,
        "stats": dict(s.stats),
        "awaiting_input": s.awaiting_input,
    }


def _load(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {os.fspath(path)!r}: {exc}") from None
    head = len(MAGIC) + _HEAD.size
    if len(data) < head or not data.startswith(MAGIC):
        raise SnapshotError(f"{os.fspath(path)!r} is not an aiotp session snapshot")
    crc, size = _HEAD.unpack_from(data, len(MAGIC))
    body = data[head:]
    if len(body) != size:
        raise SnapshotError(f"snapshot truncated: {len(body)} of {size} bytes")
    if zlib.crc32(body) != crc:
        raise SnapshotError("snapshot corrupt: checksum mismatch")
    try:
        doc = msgpack.unpackb(body, raw=False)
    except Exception as exc:
        raise SnapshotError(f"snapshot corrupt: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise SnapshotError(f"unsupported snapshot version: {doc.get('version')!r}")
    records = doc.get("sessions")
    if not isinstance(records, list):
        raise SnapshotError("snapshot corrupt: no session list")
    for r in records:
        ok = (
            isinstance(r, dict)
            and isinstance(r.get("id"), str)
            and isinstance(r.get("ttl"), int | float)
            and isinstance(r.get("remaining"), int | float)
            and isinstance(r.get("metadata"), dict)
            and isinstance(r.get("programs"), dict)
        )
        if not ok:
            raise SnapshotError(f"snapshot corrupt: bad session record {r!r:.200}")
    return records


def read_snapshot(
    cls: type[SessionStore], path: str | os.PathLike[str], **options: Any
) -> SessionStore:
    records = _load(path)  # everything is validated before anything is adopted
    store = cls(**options)
    if len(records) > store.max_sessions:
        raise SnapshotError(
            f"snapshot holds {len(records)} sessions, above max_sessions={store.max_sessions}"
        )
    now = store.clock()
    for r in records:
        ttl = float(r["ttl"])
        session = Session(
            r["id"],
            ttl,
            float(r.get("created_at") or 0.0),
            now - (ttl - float(r["remaining"])),  # so that exactly `remaining` is left
            r["metadata"],
            r["programs"],
            r.get("last_worker_id"),
            dict(r.get("stats") or {"accesses": 0}),
            bool(r.get("awaiting_input")),
            now,
        )
        store._adopt(session)
    return store
