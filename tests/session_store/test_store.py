from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from store_helpers import Clock, make

import aiotp


def test_create_get_update_delete() -> None:
    store, _ = make()
    s = store.create("user-1", ttl=7200, metadata={"user_id": "u1"})
    assert s.ttl == 7200 and s.get_metadata("user_id") == "u1"
    with pytest.raises(aiotp.SessionExists):
        store.create("user-1")
    store.update("user-1", lambda s: s.put_program("model", {"v": 2}))
    assert store.get("user-1").get_program("model") == {"v": 2}
    store.set_affinity("user-1", "ml-0.0")
    assert store.get("user-1").last_worker_id == "ml-0.0"
    assert store.delete("user-1") is True
    assert store.delete("user-1") is False
    with pytest.raises(aiotp.SessionNotFound):
        store.get("user-1")
    st = store.stats()
    assert (st.sessions_created, st.sessions_deleted, st.current_sessions) == (1, 1, 0)


def test_bad_input_is_refused_with_typed_errors() -> None:
    store, _ = make()
    with pytest.raises(TypeError):
        store.create(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.get("")
    with pytest.raises(ValueError):
        store.create("x", ttl=-1)
    with pytest.raises(ValueError):
        aiotp.SessionStore(ttl=0)
    with pytest.raises(ValueError):
        aiotp.SessionStore(max_sessions=-1)


def test_ttl_with_injected_clock_and_touch_extends_life() -> None:
    store, clock = make(ttl=10)
    store.create("a")
    store.create("b")
    clock.now += 8
    store.touch("a")  # a lives until 1018 now
    clock.now += 5  # 1013: b expired (1010), a alive
    with pytest.raises(aiotp.SessionNotFound):
        store.get("b")
    assert store.get("a").id == "a"
    assert "b" not in store
    clock.now += 11
    assert store.sweep() == 1
    st = store.stats()
    assert st.sessions_expired == 2 and st.current_sessions == 0 and st.cleanup_runs == 1


@pytest.mark.expect_errors("removal hook")
@pytest.mark.expect_errors("session removal hook")
def test_sweep_counts_and_removal_hooks() -> None:
    store, clock = make(ttl=10, heartbeat_timeout=5)
    events: list[tuple[str, str]] = []
    unsubscribe = store.on_remove(lambda sid, reason, s: events.append((sid, reason)))
    store.on_remove(lambda *a: 1 / 0)  # a broken hook never breaks the store
    for i in range(6):
        store.create(f"s{i}", ttl=10 if i < 3 else 100)
    store.set_awaiting_input("s3")
    store.delete("s5")
    clock.now += 6  # s3 waits for input without a heartbeat for 6 s > 5
    store.heartbeat("s4")
    clock.now += 5  # s0..s2 expired
    assert store.sweep() == 4
    assert sorted(events) == [
        ("s0", "expired"),
        ("s1", "expired"),
        ("s2", "expired"),
        ("s3", "gc"),
        ("s5", "deleted"),
    ]
    assert store.ids() == ["s4"]
    unsubscribe()
    store.delete("s4")
    assert len(events) == 5
    assert store.stats().sessions_gc == 1


def test_quota_is_never_exceeded_by_concurrent_creators() -> None:
    store = aiotp.SessionStore(max_sessions=500)
    created: list[str] = []
    refused = 0
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def creator(n: int) -> None:
        nonlocal refused
        barrier.wait()
        for i in range(200):
            try:
                store.create(f"{n}-{i}")
            except aiotp.SessionQuotaExceeded:
                with lock:
                    refused += 1
            else:
                with lock:
                    created.append(f"{n}-{i}")

    threads = [threading.Thread(target=creator, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(created) == 500 and refused == 8 * 200 - 500
    assert store.stats().current_sessions == 500 == len(store.ids())


def test_expired_session_frees_its_quota_place() -> None:
    store, clock = make(ttl=1, max_sessions=1)
    store.create("a")
    with pytest.raises(aiotp.SessionQuotaExceeded):
        store.create("b")
    clock.now += 2
    store.sweep()
    store.create("b")
    clock.now += 2
    store.create("b")  # the expired "b" is replaced, not a duplicate
    assert store.stats().current_sessions == 1


def test_get_or_create_is_idempotent() -> None:
    store, _ = make()
    a = store.get_or_create("x", metadata={"k": 1})
    b = store.get_or_create("x", metadata={"k": 2})
    # Each call hands out its own copy (see test_thread_safety), of the one session created.
    assert (a.id, a.created_at) == (b.id, b.created_at) and b.get_metadata("k") == 1


def test_snapshot_round_trip_keeps_remaining_ttl(tmp_path: Path) -> None:
    store, clock = make(ttl=100)
    store.create("a", metadata={"user": "u1"})
    store.update("a", lambda s: s.put_program("p", [1, 2, 3]))
    store.set_affinity("a", "w-1")
    store.create("b", ttl=10)
    clock.now += 4
    path = tmp_path / "sessions.snap"
    assert store.snapshot(str(path)) == 2
    restored_clock = Clock()
    restored_clock.now = 5.0  # another process: another monotonic origin
    again = aiotp.SessionStore.restore(str(path), clock=restored_clock)
    a = again.peek("a")
    assert a.metadata == {"user": "u1"} and a.programs == {"p": [1, 2, 3]}
    assert a.last_worker_id == "w-1"
    assert a.remaining(restored_clock.now) == pytest.approx(96)  # accessed by update/set
    assert again.peek("b").remaining(restored_clock.now) == pytest.approx(6)
    restored_clock.now += 7
    assert "b" not in again


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "missing"])
def test_corrupt_snapshot_raises_and_loads_nothing(tmp_path: Path, damage: str) -> None:
    store, _ = make()
    for i in range(50):
        store.create(f"s{i}")
    path = tmp_path / "s.snap"
    store.snapshot(str(path))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    elif damage == "garbage":
        path.write_bytes(b"not a snapshot at all")
    else:
        path.unlink()
    with pytest.raises(aiotp.SnapshotError):
        aiotp.SessionStore.restore(str(path))


async def test_background_sweeper_starts_and_stops_without_pending_tasks() -> None:
    clock = Clock()
    store = aiotp.SessionStore(ttl=1, sweep_interval=0.01, clock=clock)
    removed = asyncio.Event()
    store.on_remove(lambda *a: removed.set())
    async with store:
        store.create("a")
        clock.now += 5
        await asyncio.wait_for(removed.wait(), 5)
    assert store.stats().current_sessions == 0
    assert store._sweeper is None


async def test_async_sweep_of_a_large_store_keeps_the_loop_responsive() -> None:
    clock = Clock()
    store = aiotp.SessionStore(ttl=10, max_sessions=400_000, clock=clock)
    for i in range(300_000):
        store.create(f"s{i}", ttl=10 if i % 2 else 1000)
    clock.now += 20
    worst = 0.0
    done = False

    async def probe() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    removed = await store.sweep_async()
    done = True
    await task
    assert removed == 150_000
    assert worst < 0.05, f"the loop stalled {worst * 1000:.1f} ms"


def test_review_edges_are_refused_with_typed_errors(tmp_path: Path) -> None:
    import math
    import zlib

    import msgpack

    from aiotp.session_store.snapshot import _HEAD, MAGIC

    store, _ = make()
    with pytest.raises(ValueError, match="finite"):
        store.create("inf", ttl=math.inf)
    store.create("a", metadata={"n": 2**70})
    with pytest.raises(aiotp.SnapshotError, match="msgpack cannot store"):
        store.snapshot(str(tmp_path / "big.snap"))
    with pytest.raises(ValueError, match="may not change its id"):
        store.update("a", lambda s: setattr(s, "id", "b"))
    # A snapshot naming one session twice would take two quota places for one session.
    record = msgpack.unpackb(_export_of("dup"))["session"]
    body = msgpack.packb({"version": 1, "sessions": [record, record]}, use_bin_type=True)
    path = tmp_path / "dup.snap"
    path.write_bytes(MAGIC + _HEAD.pack(zlib.crc32(body), len(body)) + body)
    with pytest.raises(aiotp.SnapshotError, match="appears twice"):
        aiotp.SessionStore.restore(str(path))


def _export_of(session_id: str) -> bytes:
    source, _ = make()
    source.create(session_id)
    return source.export(session_id)
