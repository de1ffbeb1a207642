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

One session record (shared with `SessionStore.export`, see `aiotp.session_store.portable`) is a
msgpack map: ``id``, ``ttl``, ``remaining``, ``created_at``, ``metadata``, ``programs``,
``last_worker_id``, ``stats``, ``awaiting_input``, ``state`` and ``affinity``. Snapshots written
before sessions had a ``state`` or an ``affinity`` still load: their sessions get the store's
initial state and no affinity. A record whose state is not in the restoring store's transition
table is refused (`SnapshotError`): the store could never move it again.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from aiotp.session_store.errors import SnapshotError
from aiotp.session_store.session import Session

if TYPE_CHECKING:
    from aiotp.session_store.store import SessionStore

__all__ = ["check_record", "read_snapshot", "record_of", "session_from", "write_snapshot"]

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
            shard = table._shards[i].values()
            records.extend(record_of(s, now) for s in shard if not s.expired(now))
    try:
        body = msgpack.packb({"version": VERSION, "sessions": records}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
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


def record_of(s: Session, now: float) -> dict[str, Any]:
    """The msgpack-ready record of one session (its dicts copied; call under its shard lock)."""
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
        "state": s.state,
        "affinity": dict(s.affinity),
    }


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v  # not NaN


def check_record(r: Any) -> None:
    """`SnapshotError` naming the first field of record `r` that is missing or malformed."""
    if not isinstance(r, dict):
        raise SnapshotError(f"bad session record: not a map: {r!r:.200}")
    sid = r.get("id")
    if not isinstance(sid, str) or not sid:
        raise SnapshotError(f"bad session record: 'id' is {sid!r:.100}")
    problems = {
        "ttl": _number(r.get("ttl")) and r["ttl"] > 0,
        "remaining": _number(r.get("remaining")) and r["remaining"] >= 0,
        "created_at": r.get("created_at") is None or _number(r["created_at"]),
        "metadata": isinstance(r.get("metadata"), dict),
        "programs": isinstance(r.get("programs"), dict),
        "last_worker_id": r.get("last_worker_id") is None or isinstance(r["last_worker_id"], str),
        "stats": r.get("stats") is None
        or (
            isinstance(r["stats"], dict)
            and all(
                isinstance(k, str)
                and isinstance(v, int)
                and not isinstance(v, bool)
                and 0 <= v < 2**62  # counters: room to grow and still fit msgpack
                for k, v in r["stats"].items()
            )
        ),
        "state": r.get("state") is None or isinstance(r["state"], str),
        "affinity": r.get("affinity") is None
        or (
            isinstance(r["affinity"], dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in r["affinity"].items())
        ),
    }
    for field, ok in problems.items():
        if not ok:
            raise SnapshotError(
                f"bad session record {sid!r}: {field!r} is {r.get(field, '<missing>')!r:.100}"
            )


def session_from(
    r: dict[str, Any], transitions: Mapping[str, frozenset[str]], initial_state: str, now: float
) -> Session:
    """The session of a checked record, with exactly its remaining TTL left at `now`."""
    state = r.get("state") or initial_state  # absent from pre-lifecycle snapshots
    if state not in transitions:
        raise SnapshotError(
            f"session {r['id']!r} is in state {state!r}, which this store's transition table "
            f"does not have ({', '.join(sorted(transitions))})"
        )
    ttl = float(r["ttl"])
    return Session(
        r["id"],
        ttl,
        float(r.get("created_at") or 0.0),
        now - (ttl - min(ttl, float(r["remaining"]))),  # so that exactly `remaining` is left
        r["metadata"],
        r["programs"],
        r.get("last_worker_id"),
        dict(r.get("stats") or {"accesses": 0}),
        bool(r.get("awaiting_input")),
        now,
        state,
        dict(r.get("affinity") or {}),
    )


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
        doc = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:
        raise SnapshotError(f"snapshot corrupt: {exc}") from None
    if not isinstance(doc, dict):
        raise SnapshotError(f"snapshot corrupt: the body is a {type(doc).__name__}, not a map")
    if doc.get("version") != VERSION:
        raise SnapshotError(f"unsupported snapshot version: {doc.get('version')!r}")
    records = doc.get("sessions")
    if not isinstance(records, list):
        raise SnapshotError("snapshot corrupt: no session list")
    seen: set[str] = set()
    for r in records:
        try:
            check_record(r)
        except SnapshotError as exc:
            raise SnapshotError(f"snapshot corrupt: {exc}") from None
        if r["id"] in seen:  # two records would take two quota places for one session
            raise SnapshotError(f"snapshot corrupt: session {r['id']!r} appears twice")
        seen.add(r["id"])
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
    # Every record becomes a session before the first is adopted: a bad state loads nothing.
    sessions = [session_from(r, store.transitions, store.initial_state, now) for r in records]
    for session in sessions:
        store._adopt(session)
    return store
