"""Consistency checks of a pool's dispatcher and session pins, shared by the model tests.

They read the dispatcher's private indexes on purpose: a checkout takes a worker from them
without looking at the pool, so an index that drifts from the slots is a request sent to a
dead worker, or a free worker nobody gets.
"""

from __future__ import annotations

from typing import Any

from aiotp.workers.slot import SlotState


def check_dispatcher(pool: Any) -> None:
    d = pool.dispatcher
    slots = list(d.slots)
    assert {s.worker_id for s in slots} == set(d._by_id), "membership drifted"
    for slot in slots:
        assert slot.state in (SlotState.SERVING, SlotState.WORN, SlotState.DRAINING), slot
        assert 0 <= slot.orphans <= slot.in_flight <= slot.capacity, slot
        if d.max_requests is not None:
            assert slot.started <= d.max_requests, f"{slot} started {slot.started} requests"
    for level, bucket in enumerate(d._free):
        for slot in bucket:
            assert slot.level == level and slot.in_flight == level, (slot, level)
            assert slot.state is SlotState.SERVING, slot
    for slot in slots:
        room = slot.in_flight < slot.capacity
        serving = slot.state is SlotState.SERVING and not slot.handle.closed.done()
        if room and serving:
            assert slot.level == slot.in_flight, f"{slot} has room but is in no bucket"
    if d._placing:
        counts: dict[int, int] = {}
        for (pins, load), bucket in d._place.items():
            assert bucket, "an empty placement bucket was kept"
            for slot in bucket:
                assert slot.key == (pins, load) and len(slot.sessions) == pins, slot
                counts[pins] = counts.get(pins, 0) + 1
        assert counts == d._pin_counts, (counts, d._pin_counts)
    queued = d._pinned_waiting
    assert queued == sum(len(s.waiters) for s in slots), "pinned waiters miscounted"


def check_pins(pool: Any) -> None:
    router = pool.router
    for session, slot in router.pins.items():
        assert session in slot.sessions, (session, slot)
    for slot in pool.dispatcher.slots:
        for session in slot.sessions:
            assert router.pins.get(session) is slot, (session, slot, router.pins.get(session))
