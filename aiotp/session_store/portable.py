"""Moving one session between stores (or processes): `export` to bytes, `import_session` back.

Where `snapshot` saves a whole store to a file, this hands one session over, e.g. to the node
that will serve it next::

    data = store_a.export("job-1")              # bytes; the session stays in store_a
    store_b.import_session(data)                # live in store_b with the TTL it had left
    store_a.delete("job-1")

Format: msgpack of ``{"format": "aiotp.session", "version": 1, "session": record}``, where
``record`` is the snapshot's session record (`aiotp.session_store.snapshot`): ``id``,
``state``, ``metadata``, ``programs``, ``affinity``, ``last_worker_id``, ``stats``,
``awaiting_input``, ``ttl``, ``remaining`` (the TTL left at export time, in seconds) and
``created_at`` (wall clock). Monotonic clocks differ between processes, so timing travels as
the *remaining* TTL; the time the bytes spend in transit is not counted.

Guarantees and decisions:
- `export` does not touch the session (exporting is not a client's access) and reads one
  committed state under the session's shard lock. `SessionNotFound` if absent or expired.
  Metadata and programs must be msgpack types (None, bool, int, float, str, bytes, lists, maps);
  anything else raises `TypeError` naming the key (``programs['model']``), and nothing is
  exported. Tuples come back as lists.
- `import_session` checks everything before it changes anything: bytes that are not an export
  (garbage, truncated, trailing bytes, another format or version, a malformed field, a state
  this store's transition table does not have) raise `SnapshotError` naming what is wrong.
- A live session with the same id: `SessionExists`, unless ``replace=True``, which replaces it
  (its removal hooks and subscribers see reason ``"deleted"``). An expired one is replaced.
- The quota holds: `SessionQuotaExceeded` when the store is full of live sessions (expired ones
  are reclaimed first, as for `create`).
- An export whose remaining TTL is 0 (the session expired at the very instant it was exported)
  is refused with `SessionNotFound`, like any access to an expired session: importing it would
  only hand out a session that is already gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from aiotp.session_store.errors import SessionNotFound, SnapshotError
from aiotp.session_store.session import Session
from aiotp.session_store.snapshot import check_record, record_of, session_from

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "Portable", "decode_export"]

EXPORT_FORMAT = "aiotp.session"
EXPORT_VERSION = 1


def _pack(doc: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(doc, use_bin_type=True)
    return data


def _unpackable(record: dict[str, Any]) -> str | None:
    """The first metadata or program key whose value msgpack cannot store, as ``where[key]``."""
    for where in ("metadata", "programs"):
        for key, value in record[where].items():
            try:
                _pack({"k": key, "v": value})
            except (TypeError, ValueError, OverflowError):
                return f"{where}[{key!r}]"
    return None


def decode_export(data: Any) -> dict[str, Any]:
    """The checked session record of exported bytes; `SnapshotError` naming what is wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"an exported session is bytes, got {type(data).__name__}")
    if not data:
        raise SnapshotError("not an exported session: no bytes")
    try:
        doc = msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
    except msgpack.ExtraData:
        raise SnapshotError("not an exported session: trailing bytes after the export") from None
    except Exception as exc:  # OutOfData, FormatError, ValueError...: truncated or garbage
        raise SnapshotError(f"not an exported session (truncated or corrupt): {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise SnapshotError(
            f"not an exported session: expected a map with format {EXPORT_FORMAT!r}, "
            f"got {doc!r:.80}"
        )
    if doc.get("version") != EXPORT_VERSION:
        raise SnapshotError(
            f"unsupported export version {doc.get('version')!r} (this store reads "
            f"version {EXPORT_VERSION})"
        )
    record = doc.get("session")
    check_record(record)
    assert isinstance(record, dict)  # check_record made sure
    return record


class Portable:
    """The one-session persistence half of `SessionStore` (a mixin)."""

    clock: Callable[[], float]
    transitions: Mapping[str, frozenset[str]]
    initial_state: str

    if TYPE_CHECKING:  # provided by the store and its other halves; no stub may shadow them

        def _live(
            self, session_id: str, change: Callable[[Session, float], Session] | None
        ) -> Session: ...
        def _insert(self, session: Session, now: float, replace: bool = False) -> Session: ...

    def export(self, session_id: str) -> bytes:
        """The session as bytes for `import_session` (see the module docstring)."""
        records: list[dict[str, Any]] = []

        def read(stored: Session, now: float) -> Session:
            records.append(record_of(stored, now))  # one committed state, remaining as of now
            return stored

        self._live(session_id, read)
        record = records[0]
        try:
            return _pack({"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "session": record})
        except (TypeError, ValueError, OverflowError) as exc:
            where = _unpackable(record) or "a field"
            raise TypeError(
                f"cannot export session {session_id!r}: {where} is not a msgpack type ({exc})"
            ) from None

    def import_session(self, data: bytes, *, replace: bool = False) -> Session:
        """Restore one exported session with the TTL it had left; returns a copy as stored."""
        record = decode_export(data)
        if record["remaining"] <= 0:
            raise SessionNotFound(
                f"session {record['id']!r} had expired when it was exported; nothing imported"
            )
        now = self.clock()
        session = session_from(record, self.transitions, self.initial_state, now)
        return self._insert(session, now, replace)
