"""How `RedisSessionStore` writes a `Session` into a Redis hash and reads it back.

The fields and their order are `redis_lua.FIELDS`; scalars are decimal strings, the four dicts
(``metadata``, ``programs``, the stats other than ``accesses``, ``affinity``) msgpack maps. No
``redis`` import here: this is plain data.

Decisions:
- Metadata and programs must be msgpack types (None, bool, int, float, str, bytes, lists, maps),
  as for `SessionStore.export`: anything else is refused with `TypeError` naming the key
  (``metadata['conn']``) before anything is sent. Tuples come back as lists. Map keys must be
  str, int, float, bytes, bool or None (`TypeError` naming the key otherwise): a tuple key
  packs, but comes back as a list, which no dict can hold, and the session would be unreadable.
- A TTL is a finite number of seconds in (0, `MAX_TTL`] (1e9 s, 31 years), checked here before
  any write: the key's expiry in ms must stay an integer Redis accepts, and a value it refuses
  would leave a session half written.
- Times are written as ``repr(float)`` (exact) or by the server as ``%.6f`` seconds.
- A hash that does not decode (written by something else, or corrupt) raises `SessionStoreError`
  naming the session and the field: the store never hands out half a session.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from aiotp.session_store.errors import SessionStoreError
from aiotp.session_store.session import Session

__all__ = [
    "EMPTY_MAP",
    "MAX_TTL",
    "changes",
    "check_ttl",
    "decode",
    "new_fields",
    "pack",
    "unpack_map",
]

EMPTY_MAP = b"\x80"
MAX_TTL = 1e9  # seconds (31 years): a key's expiry in ms must stay an integer Redis accepts
_KEY_TYPES = (str, int, float, bytes, bool, type(None))


def check_ttl(value: Any) -> float:
    """`value` as a TTL: finite, > 0 and at most `MAX_TTL`; `ValueError` otherwise."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
        or value > MAX_TTL
    ):
        raise ValueError(f"ttl must be a positive finite number (at most {MAX_TTL}), got {value!r}")
    return float(value)


def _check_keys(where: str, value: Any) -> None:
    """`TypeError` naming the first map key (at any depth) that would not come back as itself."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _KEY_TYPES):
                raise TypeError(
                    f"{where}: key {key!r} is a {type(key).__name__}; map keys must be str, int, "
                    "float, bytes, bool or None (it would not come back as a key)"
                )
            _check_keys(f"{where}[{key!r}]", item)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_keys(f"{where}[{i}]", item)


_new = object.__new__


def pack(where: str, value: dict[str, Any]) -> bytes:
    """`value` as msgpack; `TypeError` naming the first key msgpack cannot store."""
    _check_keys(where, value)
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{_culprit(where, value)} is not a msgpack type ({exc})") from None
    return data


def _culprit(where: str, value: Any) -> str:
    if not isinstance(value, dict):
        return where
    for key, item in value.items():
        try:
            msgpack.packb({"k": key, "v": item}, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):
            return f"{where}[{key!r}]"
    return where


def unpack_map(sid: str, field: str, raw: Any) -> dict[Any, Any]:
    """A msgpack map field (absent: empty); `SessionStoreError` if it is not one."""
    if not raw or raw == EMPTY_MAP:
        return {}
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        raise SessionStoreError(f"session {sid!r}: field {field!r} is corrupt ({exc})") from None
    if isinstance(value, list) and not value:  # Lua's cmsgpack writes an empty map as []
        return {}
    if not isinstance(value, dict):
        raise SessionStoreError(f"session {sid!r}: field {field!r} is not a map: {value!r:.80}")
    return value


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def decode(sid: str, f: list[Any]) -> Session:
    """The `Session` of one reply's fields (`redis_lua.FIELDS` order)."""
    try:
        s: Session = _new(Session)
        s.id = sid
        s.last_accessed = float(f[0])
        s.ttl = float(f[1])
        s.created_at = float(f[2])
        s.last_heartbeat = float(f[3])
        s.awaiting_input = f[4] == b"1"
        s.state = _text(f[5])
        s.last_worker_id = _text(f[6]) if f[6] else None
        accesses = int(f[7] or 0)
    except (TypeError, ValueError, UnicodeDecodeError) as exc:
        raise SessionStoreError(f"session {sid!r}: a field is corrupt ({exc})") from None
    s.metadata = unpack_map(sid, "metadata", f[9])
    s.programs = unpack_map(sid, "programs", f[10])
    s.stats = {"accesses": accesses, **unpack_map(sid, "stats", f[11])}
    s.affinity = unpack_map(sid, "affinity", f[12])
    return s


def new_fields(s: Session) -> list[Any]:
    """The field, value pairs of a session being created (la, hb and v are the script's)."""
    stats = dict(s.stats)
    accesses = stats.pop("accesses", 0)
    if not isinstance(accesses, int) or isinstance(accesses, bool):
        raise TypeError(f"stats['accesses'] must be an int, got {accesses!r}")
    args: list[Any] = [
        "ttl",
        repr(check_ttl(s.ttl)),
        "born",
        repr(float(s.created_at)),
        "aw",
        "1" if s.awaiting_input else "0",
        "st",
        s.state,
        "acc",
        str(accesses),
        "m",
        pack("metadata", s.metadata),
        "p",
        pack("programs", s.programs),
    ]
    if s.last_worker_id is not None:
        args += ["lw", s.last_worker_id]
    if stats:
        args += ["x", pack("stats", stats)]
    if s.affinity:
        args += ["a", pack("affinity", s.affinity)]
    return args


def changes(old: Session, raw: list[Any], new: Session) -> tuple[int, list[Any]]:
    """What `update` writes: the accesses delta, and the field, value pairs that differ
    (``-name`` deletes a field). Dicts are compared packed, so an in-place change of a value
    inside one (which a one-level copy shares with `old`) is still seen."""
    out: list[Any] = []
    if new.ttl != old.ttl:
        out += ["ttl", repr(check_ttl(new.ttl))]
    if new.created_at != old.created_at:
        out += ["born", repr(float(new.created_at))]
    if new.last_heartbeat != old.last_heartbeat:
        out += ["hb", repr(float(new.last_heartbeat))]
    if bool(new.awaiting_input) != old.awaiting_input:
        out += ["aw", "1" if new.awaiting_input else "0"]
    if new.last_worker_id != old.last_worker_id:
        lw = new.last_worker_id
        if lw is not None and (not isinstance(lw, str) or not lw):
            raise TypeError(f"last_worker_id must be a non-empty string or None, got {lw!r}")
        out += ["lw", lw] if lw is not None else ["-lw", ""]
    stats = dict(new.stats)
    accesses = stats.pop("accesses", 0)
    if not isinstance(accesses, int) or isinstance(accesses, bool):
        raise TypeError(f"stats['accesses'] must be an int, got {accesses!r}")
    if isinstance(new.affinity, dict) and new.affinity != old.affinity:
        for pool, worker in new.affinity.items():
            if not (isinstance(pool, str) and pool and isinstance(worker, str) and worker):
                raise TypeError(
                    f"affinity must map pool names to worker ids, got {pool!r}: {worker!r}"
                )
    for name, where, value, at in (
        ("m", "metadata", new.metadata, 9),
        ("p", "programs", new.programs, 10),
        ("x", "stats", stats, 11),
        ("a", "affinity", new.affinity, 12),
    ):
        if not isinstance(value, dict):
            raise TypeError(f"{where} must be a dict, got {type(value).__name__}")
        data = pack(where, value)
        if data != (raw[at] or EMPTY_MAP):
            if name in ("x", "a") and not value:
                out += ["-" + name, ""]
            else:
                out += [name, data]
    return accesses - old.stats.get("accesses", 0), out


def check_id(session_id: Any) -> str:
    if not isinstance(session_id, str) or not session_id:
        raise TypeError(f"session id must be a non-empty string, got {session_id!r}")
    try:
        session_id.encode()
    except UnicodeEncodeError:
        raise ValueError(f"session id {session_id!r} is not valid text (UTF-8)") from None
    return session_id
