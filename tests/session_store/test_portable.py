"""One session to bytes and back: remaining TTL, every field, and every way bytes can be bad."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from store_helpers import Clock, make

import aiotp
from aiotp.session_store.snapshot import MAGIC


def rich(store: aiotp.SessionStore) -> aiotp.Session:
    store.create("u1", ttl=100, metadata={"user": "u1", "n": 3, 7: "int key"})
    store.update("u1", lambda s: s.put_program("model", {"v": [1, 2], "blob": b"\x00\xff"}))
    store.pin("u1", "ml", "ml-0.3")
    store.transition("u1", "running")
    store.transition("u1", "input_required")
    return store.peek("u1")


def test_round_trip_keeps_every_field_and_the_remaining_ttl() -> None:
    a, clock_a = make()
    before = rich(a)
    clock_a.now += 30  # 70 s left at export
    data = a.export("u1")
    assert isinstance(data, bytes)
    assert a.peek("u1").last_accessed == before.last_accessed  # export does not touch

    b, clock_b = make()
    clock_b.now = 5.0  # another process, another monotonic clock
    got = b.import_session(data)
    assert got.remaining(clock_b.now) == pytest.approx(70)
    for field in ("id", "ttl", "created_at", "metadata", "programs", "last_worker_id", "stats"):
        assert getattr(got, field) == getattr(before, field), field
    assert (got.state, got.affinity, got.awaiting_input) == (
        "input_required",
        {"ml": "ml-0.3"},
        True,
    )
    clock_b.now += 69
    assert "u1" in b
    clock_b.now += 2
    assert "u1" not in b
    assert b.stats().sessions_created == 1


def test_the_export_format_is_documented_msgpack() -> None:
    store, _ = make()
    rich(store)
    doc = msgpack.unpackb(store.export("u1"), raw=False, strict_map_key=False)
    assert doc["format"] == "aiotp.session" and doc["version"] == 1
    assert set(doc["session"]) == {
        "id", "ttl", "remaining", "created_at", "metadata", "programs", "last_worker_id",
        "stats", "awaiting_input", "state", "affinity",
    }  # fmt: skip


def test_an_imported_session_can_move_on_along_the_table() -> None:
    a, _ = make()
    rich(a)
    b, _ = make()
    b.import_session(a.export("u1"))
    assert b.transition("u1", "running").awaiting_input is False


def test_import_over_a_live_session_needs_replace() -> None:
    a, _ = make()
    rich(a)
    data = a.export("u1")
    b, _ = make()
    b.create("u1", metadata={"mine": True})
    ends: list[str] = []
    b.on_remove(lambda sid, why, s: ends.append(why))
    sub = b.subscribe("u1")
    with pytest.raises(aiotp.SessionExists):
        b.import_session(data)
    assert b.peek("u1").metadata == {"mine": True} and ends == []
    assert b.import_session(data, replace=True).metadata["user"] == "u1"
    assert b.peek("u1").state == "input_required"
    assert ends == ["deleted"] and len(b) == 1
    assert [(e.kind, e.data) for e in [sub.get_nowait()]] == [("end", {"reason": "deleted"})]


def test_import_over_an_expired_session_replaces_it() -> None:
    a, _ = make()
    rich(a)
    b, clock = make(ttl=10)
    b.create("u1")
    clock.now += 11
    b.import_session(a.export("u1"))
    st = b.stats()
    assert (len(b), st.sessions_expired, st.sessions_created) == (1, 1, 2)


def test_import_respects_the_quota() -> None:
    a, _ = make()
    rich(a)
    b, _ = make(max_sessions=1)
    b.create("other")
    with pytest.raises(aiotp.SessionQuotaExceeded):
        b.import_session(a.export("u1"))
    assert "u1" not in b and len(b) == 1


def test_an_expired_or_absent_session_cannot_be_exported() -> None:
    store, clock = make(ttl=10)
    with pytest.raises(aiotp.SessionNotFound):
        store.export("nobody")
    store.create("u1")
    clock.now += 11
    with pytest.raises(aiotp.SessionNotFound):
        store.export("u1")


def test_an_export_taken_at_the_instant_of_expiry_is_refused_on_import() -> None:
    a, clock = make(ttl=10)
    a.create("u1")
    clock.now += 10  # not yet expired (expiry is strictly after ttl), 0 s left
    data = a.export("u1")
    b, _ = make()
    with pytest.raises(aiotp.SessionNotFound, match="expired when it was exported"):
        b.import_session(data)
    assert len(b) == 0


def test_non_msgpack_values_are_refused_naming_the_key() -> None:
    store, _ = make()
    store.create("u1", metadata={"fine": 1, "bad": object()})
    with pytest.raises(TypeError, match=r"metadata\['bad'\]"):
        store.export("u1")
    store.create("u2")
    store.update("u2", lambda s: s.put_program("model", {1, 2}))
    with pytest.raises(TypeError, match=r"programs\['model'\]"):
        store.export("u2")


def _doc(**session: Any) -> bytes:
    store, _ = make()
    store.create("u1")
    doc = msgpack.unpackb(store.export("u1"), raw=False)
    doc["session"].update(session)
    return msgpack.packb(doc, use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "no bytes"),
        (b"\x00\x01garbage\xff", "not an exported session"),
        (b"\xc1", "truncated or corrupt"),  # a reserved msgpack byte
        (msgpack.packb([1, 2, 3]), "format"),
        (msgpack.packb({"format": "other", "version": 1}), "format"),
        (msgpack.packb({"format": "aiotp.session", "version": 2, "session": {}}), "version 2"),
        (msgpack.packb({"format": "aiotp.session", "version": 1}), "not a map"),
        (MAGIC + b"\x00" * 12, "not an exported session"),  # a whole-store snapshot header
        (_doc(id=""), "'id'"),
        (_doc(ttl=-1), "'ttl'"),
        (_doc(ttl="10"), "'ttl'"),
        (_doc(remaining=-5), "'remaining'"),
        (_doc(remaining=float("nan")), "'remaining'"),
        (_doc(metadata=[1]), "'metadata'"),
        (_doc(programs=None), "'programs'"),
        (_doc(state=3), "'state'"),
        (_doc(state="teleported"), "state 'teleported'"),
        (_doc(affinity={"ml": 3}), "'affinity'"),
        (_doc(last_worker_id=5), "'last_worker_id'"),
    ],
)
def test_bad_bytes_raise_snapshot_error_naming_what_is_wrong(data: bytes, match: str) -> None:
    store, _ = make()
    with pytest.raises(aiotp.SnapshotError, match=match):
        store.import_session(data)
    assert len(store) == 0 and store.stats().sessions_created == 0


def test_every_truncation_and_trailing_bytes_are_refused() -> None:
    store, _ = make()
    rich(store)
    data = store.export("u1")
    other, _ = make()
    for cut in range(len(data)):
        with pytest.raises(aiotp.SnapshotError):
            other.import_session(data[:cut])
    with pytest.raises(aiotp.SnapshotError, match="trailing"):
        other.import_session(data + b"\x00")
    assert len(other) == 0


def test_import_of_a_non_bytes_value_is_a_type_error() -> None:
    store, _ = make()
    with pytest.raises(TypeError, match="bytes"):
        store.import_session("not bytes")  # type: ignore[arg-type]


def test_whole_store_snapshot_carries_state_and_affinity(tmp_path: Path) -> None:
    store, _ = make()
    rich(store)
    path = tmp_path / "s.snap"
    assert store.snapshot(str(path)) == 1
    back = aiotp.SessionStore.restore(str(path))
    s = back.peek("u1")
    assert (s.state, s.affinity) == ("input_required", {"ml": "ml-0.3"})
    assert s.metadata[7] == "int key"


def test_a_snapshot_written_before_state_and_affinity_still_loads(tmp_path: Path) -> None:
    import zlib

    from aiotp.session_store.snapshot import _HEAD

    old_record = {
        "id": "legacy",
        "ttl": 60.0,
        "remaining": 30.0,
        "created_at": 1.0,
        "metadata": {"a": 1},
        "programs": {},
        "last_worker_id": "w-1",
        "stats": {"accesses": 2},
        "awaiting_input": False,
    }
    body = msgpack.packb({"version": 1, "sessions": [old_record]}, use_bin_type=True)
    path = tmp_path / "old.snap"
    path.write_bytes(MAGIC + _HEAD.pack(zlib.crc32(body), len(body)) + body)
    clock = Clock()
    store = aiotp.SessionStore.restore(str(path), clock=clock)
    s = store.peek("legacy")
    assert (s.state, s.affinity, s.last_worker_id) == ("pending", {}, "w-1")
    assert s.remaining(clock.now) == pytest.approx(30)
    custom = aiotp.SessionStore.restore(
        str(path), transitions={"new": {"old"}, "old": set()}, initial_state="new"
    )
    assert custom.peek("legacy").state == "new"


def test_a_snapshot_state_unknown_to_the_restoring_table_loads_nothing(tmp_path: Path) -> None:
    store, _ = make()
    store.create("ok")
    rich(store)  # input_required
    path = tmp_path / "s.snap"
    store.snapshot(str(path))
    with pytest.raises(aiotp.SnapshotError, match="input_required"):
        aiotp.SessionStore.restore(str(path), transitions={"pending": set()})


def test_an_import_with_bad_stats_is_refused_whole() -> None:
    import msgpack as _msgpack

    source, _ = make()
    source.create("s")
    doc = _msgpack.unpackb(source.export("s"))
    doc["session"]["stats"] = {"accesses": "many"}
    store, _ = make()
    with pytest.raises(aiotp.SnapshotError, match="stats"):
        store.import_session(_msgpack.packb(doc))
    assert "s" not in store
