"""Session affinity: strict and hint routing, placement, worker-side session state.

Real thread workers and real worker processes. Every test that names a state reaches it: the
busy worker is provably busy (its tool waits on a file the test creates), the killed worker is
provably the session's own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

import aiotp
from aiotp.workers.api import registry
from aiotp.workers.slot import SlotState

STATEFUL = "session_adapters:Stateful"
NO_HB = None


@pytest.fixture(params=["thread", "process"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _pool(rt: aiotp.Runtime, name: str = "p") -> Any:
    return registry(rt).get(name)


def _slot_of(rt: aiotp.Runtime, session: str, name: str = "p") -> Any:
    return _pool(rt, name).router.pins[session]


def _kill(slot: Any) -> None:
    if slot.handle.pid is not None:
        os.kill(slot.handle.pid, signal.SIGKILL)
    else:
        slot.handle.kill()


async def _occupy(rt: aiotp.Runtime, session: str, gate: Path) -> asyncio.Future[Any]:
    """A call of `session` that holds its worker until `gate` exists (provably running)."""
    call = asyncio.ensure_future(
        rt.execute("p", "wait_for", {"path": str(gate)}, session=session, timeout=20)
    )
    await wait_until(lambda: _slot_of(rt, session).in_flight == 1)
    return call


async def _start(rt: aiotp.Runtime, profile: str, **options: Any) -> None:
    options.setdefault("size", 3)
    options.setdefault("heartbeat", NO_HB)
    await rt.start_pool("p", STATEFUL, profile=profile, **options)


@pytest.mark.parametrize("mode", ["strict_queue", "strict_fail_fast"])
async def test_six_sessions_on_three_workers_each_served_by_one(
    rt: aiotp.Runtime, profile: str, mode: str
) -> None:
    """The issue's acceptance case: 6 sessions, 3 single-capacity workers, 8 requests each,
    all at once. Strict modes: every session is served by exactly one worker, and the
    sessions spread over the pool."""
    await _start(rt, profile, affinity=mode, checkout_timeout=20.0)
    served: dict[str, set[str]] = collections.defaultdict(set)
    counts: dict[str, list[int]] = collections.defaultdict(list)
    busy = 0

    async def client(session: str) -> None:
        nonlocal busy
        done = 0
        while done < 8:
            try:
                reply = await rt.execute("p", "bump", {"delay": 0.002}, session=session, timeout=20)
            except aiotp.WorkerBusy:
                busy += 1  # fail-fast: nothing ran; try again shortly
                await asyncio.sleep(0.001)
                continue
            served[session].add(reply["worker"])
            counts[session].append(reply["count"])
            done += 1

    await asyncio.gather(*(client(f"s{i}") for i in range(6)))
    assert all(len(workers) == 1 for workers in served.values()), served
    used = {next(iter(w)) for w in served.values()}
    assert len(used) >= 2, served
    # The state lived in that one worker: each session counted 1..8 without a gap.
    assert all(c == list(range(1, 9)) for c in counts.values()), counts
    if mode == "strict_fail_fast":
        assert busy > 0, "never reached a busy pinned worker"
    stats = rt.pool_stats("p")
    assert stats.pinned_sessions == 6
    assert sorted(w.pinned_sessions for w in stats.workers) == [2, 2, 2]


async def test_new_sessions_spread_by_fewest_pins(rt: aiotp.Runtime, profile: str) -> None:
    """Sequential new sessions on an idle pool: today's code put every one on the first
    worker; placement by fewest pins spreads them 2/2/2."""
    await _start(rt, profile)
    workers = collections.Counter()
    for i in range(6):
        reply = await rt.execute("p", "bump", {}, session=f"n{i}")
        workers[reply["worker"]] += 1
    assert sorted(workers.values()) == [2, 2, 2], workers


async def test_strict_fail_fast_refuses_at_once_when_the_pinned_worker_is_busy(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await _start(rt, profile, affinity="strict_fail_fast")
    first = await rt.execute("p", "bump", {}, session="a")
    gate = tmp_path / "gate"
    blocker = await _occupy(rt, "a", gate)
    with pytest.raises(aiotp.WorkerBusy) as info:
        await rt.execute("p", "bump", {}, session="a")
    assert info.value.session_id == "a" and "strict_fail_fast" in str(info.value)
    assert isinstance(info.value, aiotp.PoolBusy)
    # Other workers are idle and other sessions are served meanwhile.
    assert (await rt.execute("p", "bump", {}, session="b"))["worker"] != first["worker"]
    gate.touch()
    assert await blocker == first["worker"]
    assert (await rt.execute("p", "bump", {}, session="a"))["count"] == 2


async def test_strict_queue_waits_for_its_own_worker(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await _start(rt, profile, affinity="strict_queue")
    first = await rt.execute("p", "bump", {}, session="a")
    gate = tmp_path / "gate"
    blocker = await _occupy(rt, "a", gate)
    queued = asyncio.ensure_future(rt.execute("p", "bump", {}, session="a", timeout=20))
    await wait_until(lambda: rt.pool_stats("p").queued == 1)
    assert not queued.done()  # two idle workers, and still it waits for its own
    gate.touch()
    await blocker
    reply = await queued
    assert reply["worker"] == first["worker"] and reply["count"] == 2


async def test_strict_queue_wait_is_bounded_by_the_checkout_timeout(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await _start(rt, profile, affinity="strict_queue", checkout_timeout=0.2)
    await rt.execute("p", "bump", {}, session="a")
    gate = tmp_path / "gate"
    blocker = await _occupy(rt, "a", gate)
    with pytest.raises(aiotp.CheckoutTimeout):
        await rt.execute("p", "bump", {}, session="a", timeout=10)
    assert rt.pool_stats("p").queue_timeouts == 1
    gate.touch()
    await blocker


async def test_hint_mode_goes_elsewhere_when_the_pinned_worker_is_busy(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await _start(rt, profile)  # affinity="hint", the default
    first = await rt.execute("p", "where", {}, session="a")
    gate = tmp_path / "gate"
    blocker = await _occupy(rt, "a", gate)
    other = await rt.execute("p", "where", {}, session="a", timeout=5)
    assert other != first  # not held hostage by its busy worker
    gate.touch()
    await blocker


@pytest.mark.parametrize("mode", ["strict_queue", "strict_fail_fast"])
async def test_a_dead_pinned_worker_costs_the_session_its_state_once(
    rt: aiotp.Runtime, profile: str, mode: str
) -> None:
    await _start(rt, profile, affinity=mode)
    first = await rt.execute("p", "bump", {}, session="a")
    assert (await rt.execute("p", "bump", {}, session="a"))["count"] == 2
    slot = _slot_of(rt, "a")
    _kill(slot)
    await wait_until(lambda: slot.state is SlotState.GONE)
    with pytest.raises(aiotp.SessionWorkerLost) as info:
        await rt.execute("p", "bump", {}, session="a")
    assert info.value.session_id == "a" and info.value.worker_id == slot.worker_id
    assert isinstance(info.value, aiotp.WorkerCrashed)
    again = await rt.execute("p", "bump", {}, session="a")  # re-pinned on a live worker
    assert again["count"] == 1 and again["worker"] != first["worker"]
    assert (await rt.execute("p", "bump", {}, session="a"))["count"] == 2
    # The store saw the new pin.
    assert rt.sessions.peek("a").affinity["p"] == _slot_of(rt, "a").worker_id


async def test_a_request_in_flight_and_one_queued_learn_of_the_loss_at_once(
    rt: aiotp.Runtime, profile: str, tmp_path: Path
) -> None:
    await _start(rt, profile, affinity="strict_queue", checkout_timeout=30.0)
    await rt.execute("p", "bump", {}, session="a")
    slot = _slot_of(rt, "a")
    running = asyncio.ensure_future(
        rt.execute("p", "wait_for", {"path": str(tmp_path / "never")}, session="a", timeout=30)
    )
    await wait_until(lambda: slot.in_flight == 1)
    queued = asyncio.ensure_future(rt.execute("p", "bump", {}, session="a", timeout=30))
    await wait_until(lambda: len(slot.waiters) == 1)
    _kill(slot)
    results = await asyncio.wait_for(
        asyncio.gather(running, queued, return_exceptions=True), timeout=10
    )
    assert all(isinstance(r, aiotp.SessionWorkerLost) for r in results), results
    # Told once: the next call is placed anew and starts from empty state.
    assert (await rt.execute("p", "bump", {}, session="a"))["count"] == 1


async def test_hint_mode_survives_a_dead_worker_silently(rt: aiotp.Runtime, profile: str) -> None:
    await _start(rt, profile)
    first = await rt.execute("p", "bump", {}, session="a")
    slot = _slot_of(rt, "a")
    _kill(slot)
    await wait_until(lambda: slot.state is SlotState.GONE)
    reply = await rt.execute("p", "bump", {}, session="a")
    assert reply["worker"] != first["worker"] and reply["count"] == 1


async def test_settings_travel_with_the_session(rt: aiotp.Runtime, profile: str) -> None:
    await _start(rt, profile, affinity="strict_queue")
    rt.sessions.create("a", metadata={"verbose": 2, "strategy": "dfs"})
    reply = await rt.execute("p", "bump", {}, session="a")
    assert reply["settings"] == {"verbose": 2, "strategy": "dfs"}
    rt.sessions.update("a", lambda s: s.put_metadata("verbose", 0))
    reply = await rt.execute("p", "bump", {}, session="a")
    assert reply["settings"] == {"verbose": 0, "strategy": "dfs"} and reply["count"] == 2
    # Unchanged settings are not sent again, and the worker still has them.
    reply = await rt.execute("p", "bump", {}, session="a")
    assert reply["settings"] == {"verbose": 0, "strategy": "dfs"}


async def test_state_is_dropped_when_the_session_ends(rt: aiotp.Runtime, profile: str) -> None:
    await _start(rt, profile, size=1, affinity="strict_queue")
    base = await rt.execute("p", "held", {})  # a thread worker shares the test's process
    for i in range(20):
        await rt.execute("p", "bump", {}, session=f"s{i}")
    assert await rt.execute("p", "held", {}) == base + 20
    for i in range(10):
        rt.sessions.delete(f"s{i}")  # deleted
    await wait_until(lambda: not any(f"s{i}" in _pool(rt).router.pins for i in range(10)))
    assert await rt.execute("p", "held", {}) == base + 10
    # A deleted session that comes back starts from nothing.
    assert (await rt.execute("p", "bump", {}, session="s0"))["count"] == 1
    assert (await rt.execute("p", "bump", {}, session="s15"))["count"] == 2


async def test_state_is_dropped_when_a_session_expires(profile: str) -> None:
    now = [0.0]
    store = aiotp.SessionStore(ttl=60, clock=lambda: now[0])
    async with aiotp.Runtime(sessions=store, shutdown_timeout=2.0) as rt:
        await _start(rt, profile, size=1, affinity="strict_queue")
        base = await rt.execute("p", "held", {})
        await rt.execute("p", "bump", {}, session="old")
        assert await rt.execute("p", "held", {}) == base + 1
        now[0] += 61
        assert store.sweep() == 1
        await wait_until(lambda: "old" not in _pool(rt).router.pins)
        assert await rt.execute("p", "held", {}) == base


async def test_a_tool_cannot_be_handed_session_as_an_argument(
    rt: aiotp.Runtime, profile: str
) -> None:
    await _start(rt, profile, size=1)
    with pytest.raises(aiotp.ToolError) as info:
        await rt.execute("p", "bump", {"session": "forged"}, session="a")
    assert "session" in str(info.value)
    # A tool whose `session` is a plain parameter gets it as an argument.
    assert await rt.execute("p", "clash", {"session": "x"}) == "x"
    assert (await rt.execute("p", "bump", {}))["count"] is None  # no session= -> None


async def test_a_full_store_costs_affinity_not_the_request(
    profile: str, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Any] = []
    store = aiotp.SessionStore(max_sessions=1)
    async with aiotp.Runtime(sessions=store, shutdown_timeout=2.0) as rt:
        aiotp.telemetry.attach(
            "unrouted-test", ("aiotp", "pool", "session", "unrouted"), lambda *a: events.append(a)
        )
        try:
            await _start(rt, profile, affinity="strict_queue")
            await rt.execute("p", "bump", {}, session="first")
            with caplog.at_level(logging.WARNING, logger="aiotp.pool"):
                for _ in range(3):
                    await rt.execute("p", "bump", {}, session="second")
        finally:
            aiotp.telemetry.detach("unrouted-test")
    warnings = [r for r in caplog.records if "session store is full" in r.getMessage()]
    assert len(warnings) == 1 and len(events) == 3


async def test_bad_affinity_and_session_input_are_refused(rt: aiotp.Runtime) -> None:
    with pytest.raises(ValueError, match="affinity must be one of"):
        await rt.start_pool("p", STATEFUL, affinity="sticky")
    await _start(rt, "thread", size=1)
    with pytest.raises(ValueError, match="affinity must be one of"):
        await rt.execute("p", "bump", {}, session="a", affinity="strict")
    with pytest.raises(TypeError, match="non-empty string"):
        await rt.execute("p", "bump", {}, session="")
    with pytest.raises(TypeError, match="non-empty string"):
        await rt.execute("p", "bump", {}, session=7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"aiotp\.Retry"):
        await rt.execute("p", "bump", {}, retry=3)


async def test_a_strict_session_on_a_worker_at_max_requests_is_told(
    rt: aiotp.Runtime, profile: str
) -> None:
    """A worker that reached max_requests never serves its sessions again: they learn it
    (SessionWorkerLost) rather than being moved silently without their state."""
    await _start(rt, profile, size=2, affinity="strict_queue", max_requests=3)
    for expected in (1, 2, 3):
        assert (await rt.execute("p", "bump", {}, session="a"))["count"] == expected
    with pytest.raises(aiotp.SessionWorkerLost):
        await rt.execute("p", "bump", {}, session="a")
    assert (await rt.execute("p", "bump", {}, session="a"))["count"] == 1
