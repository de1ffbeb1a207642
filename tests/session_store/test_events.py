"""Session events: kinds, fan-out, producers in other threads, slow subscribers, no leaks, and
one "end" per session whoever removes it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from typing import Any

import pytest
from store_helpers import make

import aiotp

DEADLINE = 5.0


async def collect(sub: aiotp.Subscription) -> list[aiotp.SessionEvent]:
    """Every event up to and including "end" (the iteration stops after it)."""
    async with asyncio.timeout(DEADLINE):
        return [ev async for ev in sub]


def drain(sub: aiotp.Subscription) -> list[aiotp.SessionEvent]:
    out = []
    while True:
        try:
            out.append(sub.get_nowait())
        except asyncio.QueueEmpty:
            return out


def kinds(events: list[aiotp.SessionEvent]) -> list[tuple[str, Any]]:
    return [(e.kind, e.data) for e in events]


def no_subscribers(store: aiotp.SessionStore) -> bool:
    return store._subs.by_session == {} and store.stats().subscribers == 0


async def test_every_kind_of_event_in_commit_order_then_end() -> None:
    store, clock = make()
    store.create("u1")
    sub = store.subscribe("u1")
    store.transition("u1", "running")
    clock.now += 1
    store.heartbeat("u1")
    store.publish("u1", {"progress": 0.5})
    store.transition("u1", "done")
    store.delete("u1")
    events = await collect(sub)
    assert kinds(events) == [
        ("state", {"from": "pending", "to": "running"}),
        ("heartbeat", {}),
        ("published", {"progress": 0.5}),
        ("state", {"from": "running", "to": "done"}),
        ("end", {"reason": "deleted"}),
    ]
    assert all(e.session_id == "u1" for e in events)
    assert [e.at for e in events] == [1000.0, 1001.0, 1001.0, 1001.0, 1001.0]
    assert sub.closed and no_subscribers(store)


async def test_an_illegal_transition_emits_nothing() -> None:
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1")
    with pytest.raises(aiotp.IllegalTransition):
        store.transition("u1", "done")
    assert drain(sub) == []


async def test_subscribe_and_publish_on_an_absent_session_fail_at_once() -> None:
    store, clock = make(ttl=10)
    with pytest.raises(aiotp.SessionNotFound):
        store.subscribe("nobody")
    with pytest.raises(aiotp.SessionNotFound):
        store.publish("nobody", 1)
    store.create("old")
    clock.now += 11
    with pytest.raises(aiotp.SessionNotFound):
        store.publish("old", 1)
    with pytest.raises(aiotp.SessionNotFound):
        store.subscribe("old")
    assert no_subscribers(store)


@pytest.mark.parametrize(
    ("kw", "what"), [({"max_queue": 0}, "max_queue"), ({"overflow": "x"}, "overflow")]
)
async def test_bad_subscription_options_are_refused(kw: dict[str, Any], what: str) -> None:
    store, _ = make()
    store.create("u1")
    with pytest.raises(ValueError, match=what):
        store.subscribe("u1", **kw)
    assert no_subscribers(store)


async def test_publish_does_not_touch_the_session() -> None:
    store, clock = make(ttl=10)
    store.create("u1")
    clock.now += 8
    store.publish("u1", "x")
    clock.now += 3
    assert "u1" not in store


async def test_fan_out_every_subscriber_gets_every_event() -> None:
    store, _ = make()
    store.create("u1")
    subs = [store.subscribe("u1") for _ in range(5)]
    store.publish("u1", 1)
    store.delete("u1")
    results = await asyncio.gather(*(collect(s) for s in subs))
    assert all(kinds(r) == [("published", 1), ("end", {"reason": "deleted"})] for r in results)
    assert no_subscribers(store)


async def test_events_from_another_threads_producer_wake_a_waiting_reader() -> None:
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1")
    reader = asyncio.create_task(collect(sub))
    await asyncio.sleep(0)  # the reader now waits on an empty queue

    def produce() -> None:
        for i in range(50):
            store.publish("u1", i)
        store.delete("u1")

    await asyncio.to_thread(produce)
    events = await reader
    assert [e.data for e in events[:-1]] == list(range(50))
    assert events[-1].kind == "end"


async def test_a_reader_on_another_threads_loop_gets_events_from_this_one() -> None:
    store, _ = make()
    store.create("u1")
    subscribed = threading.Event()
    out: list[list[aiotp.SessionEvent]] = []

    async def remote() -> None:
        sub = store.subscribe("u1")
        subscribed.set()
        out.append(await collect(sub))

    th = threading.Thread(target=asyncio.run, args=(remote(),))
    th.start()
    assert await asyncio.to_thread(subscribed.wait, DEADLINE)
    store.transition("u1", "running")
    store.delete("u1")
    await asyncio.to_thread(th.join, DEADLINE)
    assert kinds(out[0]) == [
        ("state", {"from": "pending", "to": "running"}),
        ("end", {"reason": "deleted"}),
    ]


async def test_slow_subscriber_drop_oldest_reports_the_gap_once_then_the_newest() -> None:
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1", max_queue=10)
    await asyncio.to_thread(lambda: [store.publish("u1", i) for i in range(25)])
    assert len(sub._sub._queue) == 10  # bounded, whatever the producer did
    store.delete("u1")  # "end" is never dropped, even over a full queue
    events = await collect(sub)
    assert kinds(events[:1]) == [("lagged", {"dropped": 15})]
    assert [e.data for e in events[1:-1]] == list(range(15, 25))
    assert kinds(events[-1:]) == [("end", {"reason": "deleted"})]
    assert no_subscribers(store)


async def test_drop_oldest_reports_each_gap_before_the_event_after_it() -> None:
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1", max_queue=2)
    for i in range(4):
        store.publish("u1", i)  # 0, 1 dropped
    assert kinds([sub.get_nowait(), sub.get_nowait()]) == [
        ("lagged", {"dropped": 2}),
        ("published", 2),
    ]
    for i in range(4, 7):
        store.publish("u1", i)  # queue held 3; 4 arrives, 5 drops 3, 6 drops 4
    assert kinds(drain(sub)) == [("lagged", {"dropped": 2}), ("published", 5), ("published", 6)]


async def test_slow_subscriber_with_close_policy_is_told_it_lagged() -> None:
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1", max_queue=10, overflow="close")
    keeps_up = store.subscribe("u1", max_queue=100, overflow="close")
    await asyncio.to_thread(lambda: [store.publish("u1", i) for i in range(11)])
    with pytest.raises(aiotp.SubscriberLagged) as info:
        await anext(sub)
    assert info.value.session_id == "u1" and info.value.max_queue == 10
    assert "'u1'" in str(info.value) and "10 events" in str(info.value)
    assert sub.closed
    with pytest.raises(StopAsyncIteration):  # over for good
        await anext(sub)
    assert len(drain(keeps_up)) == 11  # the other subscriber is unaffected
    assert store.stats().subscribers == 1
    store.delete("u1")
    assert kinds(drain(keeps_up)) == [("end", {"reason": "deleted"})] and no_subscribers(store)


async def test_close_policy_still_delivers_end_over_a_full_queue() -> None:
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1", max_queue=3, overflow="close")
    for i in range(3):
        store.publish("u1", i)
    store.delete("u1")
    events = await collect(sub)
    assert kinds(events) == [
        ("published", 0),
        ("published", 1),
        ("published", 2),
        ("end", {"reason": "deleted"}),
    ]


async def test_a_producer_never_blocks_on_a_subscriber_that_never_reads() -> None:
    store, _ = make()
    store.create("u1")
    subs = [store.subscribe("u1", max_queue=5, overflow=o) for o in ("drop_oldest", "close")]

    def flood() -> None:
        for i in range(20_000):
            store.publish("u1", i)

    th = threading.Thread(target=flood)
    th.start()
    await asyncio.to_thread(th.join, DEADLINE)
    assert not th.is_alive()
    assert len(subs[0]._sub._queue) == 5 and len(subs[1]._sub._queue) == 0
    assert store.stats().subscribers == 1  # the lagged "close" one left the registry


async def test_breaking_out_of_the_loop_unsubscribes() -> None:
    store, _ = make()
    store.create("u1")
    store.publish("u1", 0)  # before: not seen
    loop = asyncio.get_running_loop()
    loop.call_soon(store.publish, "u1", 1)
    async for ev in store.subscribe("u1"):
        assert ev.data == 1
        break
    assert no_subscribers(store)
    store.publish("u1", 2)  # nobody left to get it: no error


async def test_a_cancelled_read_loses_nothing_and_reads_on() -> None:
    """A timed-out or cancelled read takes no event and keeps the subscription: a WebSocket
    endpoint's keep-alive (`wait_for(anext(sub), t)`) must not end it."""
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1")
    reader = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(sub), 0.01)
    assert not sub.closed and not no_subscribers(store)
    store.publish("u1", 1)
    assert (await anext(sub)).data == 1
    await sub.aclose()
    assert no_subscribers(store)


async def test_aclose_and_async_with_unsubscribe_and_end_a_pending_read() -> None:
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1")
    store.publish("u1", 1)
    await sub.aclose()
    assert no_subscribers(store)
    with pytest.raises(StopAsyncIteration):  # queued events are dropped with the subscription
        await anext(sub)
    async with store.subscribe("u1") as sub2:
        reader = asyncio.create_task(collect(sub2))
        await asyncio.sleep(0)
        sub2.close()  # from outside the reader: the pending read stops
        assert await reader == []
    assert no_subscribers(store)


async def test_a_dropped_subscription_is_released_without_a_leak() -> None:
    store, _ = make()
    store.create("u1")
    for _ in range(100):
        store.subscribe("u1")  # never iterated, never closed
    gc.collect()
    assert no_subscribers(store)


def test_a_subscriber_whose_loop_closed_is_dropped_silently() -> None:
    store, _ = make()
    store.create("u1")
    other = asyncio.new_event_loop()

    async def subscribe() -> aiotp.Subscription:
        return store.subscribe("u1")

    held = other.run_until_complete(subscribe())
    other.close()
    store.publish("u1", 1)  # no error, nothing logged
    assert no_subscribers(store) and held is not None
    store.delete("u1")


async def test_a_recreated_session_never_gets_the_old_ones_end() -> None:
    store, clock = make(ttl=10)
    store.create("u1")
    old = store.subscribe("u1")
    clock.now += 11
    store.create("u1")  # replaces the expired one in place
    new = store.subscribe("u1")
    store.publish("u1", "new")
    assert kinds(drain(old)) == [("end", {"reason": "expired"})]
    assert kinds(drain(new)) == [("published", "new")]
    store.delete("u1")
    assert kinds(drain(new)) == [("end", {"reason": "deleted"})]


@pytest.mark.parametrize("reason", ["expired", "deleted", "gc"])
async def test_every_removal_path_ends_the_subscription_once(reason: str) -> None:
    store, clock = make(ttl=10, heartbeat_timeout=5)
    hooks: list[str] = []
    store.on_remove(lambda sid, why, s: hooks.append(why))
    store.create("u1")
    store.transition("u1", "running")
    store.transition("u1", "input_required")
    sub = store.subscribe("u1")
    if reason == "deleted":
        store.delete("u1")
    elif reason == "gc":
        clock.now += 6
        store.sweep()
    else:
        clock.now += 11
        with pytest.raises(aiotp.SessionNotFound):
            store.get("u1")
    store.sweep()
    store.delete("u1")
    assert kinds(await collect(sub)) == [("end", {"reason": reason})]
    assert hooks == [reason]


@pytest.mark.usefixtures("fast_switching")
async def test_end_fires_once_when_sweep_and_access_find_the_expiry_together() -> None:
    store, clock = make(ttl=10, shards=4)
    ids = [f"s{i}" for i in range(300)]
    hooks: list[str] = []
    store.on_remove(lambda sid, why, s: hooks.append(sid))
    for sid in ids:
        store.create(sid)
    subs = {sid: [store.subscribe(sid), store.subscribe(sid, overflow="close")] for sid in ids}
    clock.now += 11
    barrier = threading.Barrier(4)

    def sweeper() -> None:
        barrier.wait(DEADLINE)
        store.sweep()

    def accessor(order: list[str]) -> None:
        barrier.wait(DEADLINE)
        for sid in order:
            with contextlib.suppress(aiotp.SessionNotFound):
                store.heartbeat(sid)
            store.delete(sid)

    threads = [
        threading.Thread(target=sweeper),
        threading.Thread(target=sweeper),
        threading.Thread(target=accessor, args=(ids,)),
        threading.Thread(target=accessor, args=(ids[::-1],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join, DEADLINE)
    for sid, pair in subs.items():
        for sub in pair:
            assert kinds(await collect(sub)) == [("end", {"reason": "expired"})], sid
    assert sorted(hooks) == sorted(ids)  # one removal each
    assert store.stats().sessions_expired == 300 and len(store) == 0
    assert no_subscribers(store)


async def test_two_tasks_may_not_read_one_subscription_at_once() -> None:
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1")
    first = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="another task"):
        await anext(sub)
    store.publish("u1", 1)  # the refused reader did not end the first one's subscription
    assert (await first).data == 1


def test_repr_shows_the_phase() -> None:
    store, _ = make()
    store.create("u1")
    sub = store.subscribe("u1")
    store.publish("u1", 1)
    assert repr(sub) == "<Subscription 'u1' OPEN queued=1>"
    sub.close()
    assert repr(sub) == "<Subscription 'u1' CLOSED queued=0>"
