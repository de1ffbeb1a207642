"""A pool against a model: random calls, timeouts, cancellations, abandoned streams, kills,
SIGSTOPs and recycling, in both profiles, with the pool's invariants checked after every step.

Invariants (after every step):
- every call ends with its result or a typed error (`AiotpError`; `CancelledError` only for the
  calls we cancelled) within its timeout plus `MARGIN`; a pending call is never older than that;
- a `WorkerCrashed` names the worker that held that very request (telemetry tells us which
  worker each request went to): no request is failed by a worker that never held it;
- the dispatcher's books balance: busy is the sum of the slots' requests, each slot holds at
  least its orphans and at most its capacity, nothing is queued while a worker is free;
And at quiescence (a rule, and at teardown): every call ended, busy and queued return to 0 and
the pool to its size; after stop, no process the pool ever had (workers, templates, tools'
children) is alive.

`AIOTP_CHAOS_LONG=1` (``make chaos``) runs many more and longer examples.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from typing import Any

import pytest
from dispatch_checks import check_dispatcher
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from procs import alive, descendants

import aiotp
from aiotp.workers.api import registry

ADAPTER = "guarantee_adapters:ModelTools"
MARGIN = 3.0  # seconds past a call's timeout that a loaded 2-core machine may need
LONG = os.environ.get("AIOTP_CHAOS_LONG") == "1"
SIZE = 2
# What the runs reached, per profile: the last test checks that the machine really got there
# (a model test whose calls never time out or whose workers never die proves nothing).
REACHED: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


class _Call:
    __slots__ = ("cancelled", "ended", "started", "task", "timeout")

    def __init__(self, task: asyncio.Task[Any], timeout: float, started: float) -> None:
        self.task = task
        self.timeout = timeout
        self.started = started
        self.ended: float | None = None
        self.cancelled = False


class PoolMachine(RuleBasedStateMachine):
    profile = "thread"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.calls: list[_Call] = []
        self.held: dict[asyncio.Task[Any], str] = {}  # request task -> worker that got it
        self.pids: set[int] = set()
        self.stopped: set[int] = set()
        self.rt = aiotp.Runtime(shutdown_timeout=3.0)
        self.run(self.rt.__aenter__())
        aiotp.telemetry.attach("model", ("aiotp", "pool", "execute", "start"), self._dispatched)
        self.run(
            self.rt.start_pool(
                "m",
                ADAPTER,
                profile=self.profile,
                size=SIZE,
                heartbeat=aiotp.Heartbeat(interval=0.1, timeout=0.5, max_missed=2),
                cancel_grace=0.4,
                max_requests=9,
                max_restarts=10_000,
                shutdown=0.5,
            )
        )
        self._note_pids()
        # Every example starts with a cancelled call: the reached-states check must not depend
        # on hypothesis drawing the cancel rule (a fresh-clone run once drew it in no example).
        self.cancel_a_call(0)

    # -- plumbing ------------------------------------------------------------------------
    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def _dispatched(self, _event: Any, _measurements: Any, meta: dict[str, Any]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.held[task] = meta["worker_id"]

    def _pool(self) -> Any:
        return registry(self.rt).get("m")

    def _note_pids(self) -> None:
        pool = self._pool()
        for slot in pool.dispatcher.slots:
            if slot.handle.pid is not None:
                self.pids.add(slot.handle.pid)
        if pool.zygote is not None:
            self.pids.add(pool.zygote.pid)

    def _start(self, coro: Any, timeout: float) -> None:
        task = self.loop.create_task(coro)
        call = _Call(task, timeout, time.monotonic())

        def ended(_t: asyncio.Task[Any]) -> None:
            call.ended = time.monotonic()

        task.add_done_callback(ended)
        self.calls.append(call)

    # -- rules -----------------------------------------------------------------------------
    @rule(
        tool=st.sampled_from(["block", "wait", "quick"]),
        seconds=st.sampled_from([0.0, 0.02, 0.1, 0.6, 2.0]),
        timeout=st.sampled_from([0.05, 0.3, 1.0, 4.0]),
    )
    def call(self, tool: str, seconds: float, timeout: float) -> None:
        args: dict[str, Any] = {"value": seconds} if tool == "quick" else {"seconds": seconds}
        self._start(self.rt.execute("m", tool, args, timeout=timeout), timeout)

    @rule(tool=st.sampled_from(["block", "wait"]))
    def call_that_times_out(self, tool: str) -> None:
        """A tool that outlives its caller's timeout: its slot must stay busy until it ends
        (or its worker is recycled past cancel_grace)."""
        self.call(tool, 0.6, 0.05)

    @rule(n=st.integers(1, 200), take=st.integers(0, 5), timeout=st.sampled_from([0.5, 4.0]))
    def abandoned_stream(self, n: int, take: int, timeout: float) -> None:
        async def consume() -> list[int]:
            got: list[int] = []
            async for item in self.rt.stream("m", "count", {"n": n}, timeout=timeout):
                got.append(item)
                if len(got) >= take:
                    break
            return got

        # A stream's timeout bounds each wait for an item; the whole is bounded by its items.
        self._start(consume(), timeout * (take + 1))

    @rule(pick=st.integers(0, 1000))
    def cancel_a_call(self, pick: int) -> None:
        # No precondition: which calls are still pending depends on timing, and hypothesis
        # needs the same rules available when it replays an example.
        pending = [c for c in self.calls if not c.task.done()]
        if not pending:
            # Nothing in flight: start a call and cancel it while it runs, so the rule always
            # exercises a cancellation.
            self.call("block", 0.6, 4.0)
            self.run(asyncio.sleep(0.02))
            pending = [self.calls[-1]]
        call = pending[pick % len(pending)]
        call.cancelled = True
        call.task.cancel()

    @rule(pick=st.integers(0, 1000), how=st.sampled_from(["kill", "sigkill", "sigstop"]))
    def strike_a_worker(self, pick: int, how: str) -> None:
        slots = [s for s in self._pool().dispatcher.slots if not s.handle.closed.done()]
        busy = [s for s in slots if s.in_flight]
        slots = busy or slots  # a worker holding requests, when there is one: the harder case
        if not slots:
            return
        slot = slots[pick % len(slots)]
        pid = slot.handle.pid
        if how == "kill" or pid is None:
            self.rt.exit(slot.ref, "kill")
            return
        try:
            if how == "sigkill":
                os.kill(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGSTOP)  # hung: the heartbeat must catch it
                self.stopped.add(pid)
        except ProcessLookupError:
            pass  # it died on its own just now; its actor has not heard yet

    @rule()
    def kill_the_worker_of_a_call(self) -> None:
        """Start a long call and kill the very worker it went to: its caller must get
        `WorkerCrashed` naming that worker, and no other call may fail for it."""
        self.call("block", 2.0, 4.0)
        task = self.calls[-1].task

        async def dispatched() -> None:
            while task not in self.held and not task.done():
                await asyncio.sleep(0.005)

        self.run(dispatched(), timeout=5.0)
        slot = self._pool().dispatcher.get(self.held.get(task))
        if slot is None or slot.handle.closed.done():
            return  # it died or finished meanwhile
        if slot.handle.pid is None:
            self.rt.exit(slot.ref, "kill")
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.handle.pid, signal.SIGKILL)

    @rule()
    def recycle_a_worker(self) -> None:
        slots = [s for s in self._pool().dispatcher.slots if not s.draining]
        if slots:
            self._pool().recycle(slots[0])

    @rule(seconds=st.sampled_from([0.0, 0.02, 0.1, 0.4]))
    def advance(self, seconds: float) -> None:
        self.run(asyncio.sleep(seconds))
        self._note_pids()

    @rule()
    def quiesce(self) -> None:
        self._quiesce()

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def every_call_ends_typed_and_in_time(self) -> None:
        now = time.monotonic()
        for call in self.calls:
            if call.ended is None and call.task.done():
                # Done in the loop's last turn: its done callback has not run yet.
                call.ended = now
            if call.ended is None:
                assert now - call.started <= call.timeout + MARGIN, (
                    f"a call is still pending {now - call.started:.2f} s after it started "
                    f"(timeout {call.timeout})"
                )
                continue
            assert call.ended - call.started <= call.timeout + MARGIN, (
                f"a call took {call.ended - call.started:.2f} s (timeout {call.timeout})"
            )
            if call.task.cancelled():
                assert call.cancelled, "a call was cancelled that nobody cancelled"
                REACHED[self.profile]["cancelled"] += 1
                continue
            exc = call.task.exception()
            REACHED[self.profile][type(exc).__name__ if exc else "result"] += 1
            if exc is None:
                continue
            assert isinstance(exc, aiotp.AiotpError), f"untyped error: {exc!r}"
            if isinstance(exc, aiotp.WorkerCrashed) and call.task in self.held:
                assert exc.worker_id == self.held[call.task], (
                    f"request held by {self.held[call.task]} failed by {exc.worker_id}"
                )

    @invariant()
    def the_books_balance(self) -> None:
        pool = self._pool()
        check_dispatcher(pool)
        stats = pool.stats()
        slots = list(pool.dispatcher.slots)
        assert stats.busy == sum(s.in_flight for s in slots)
        for slot in slots:
            assert 0 <= slot.orphans <= slot.in_flight <= slot.capacity, slot
        if stats.queued:
            free = [
                s
                for s in slots
                if not s.draining and s.in_flight < s.capacity and not s.handle.closed.done()
            ]
            assert not free, f"{stats.queued} callers wait while {free} is free"

    def _quiesce(self) -> None:
        for call in self.calls:
            if not call.task.done():
                self.run(asyncio.wait({call.task}, timeout=call.timeout + MARGIN))
        self.every_call_ends_typed_and_in_time()
        assert all(c.task.done() for c in self.calls)

        async def settled() -> None:
            while True:
                stats = self.rt.pool_stats("m")
                if (stats.busy, stats.queued, stats.live) == (0, 0, SIZE):
                    return
                await asyncio.sleep(0.01)

        try:
            self.run(settled(), timeout=20.0)
        except TimeoutError:
            raise AssertionError(f"the pool did not settle: {self.rt.pool_stats('m')}") from None
        self._note_pids()
        for slot in self._pool().dispatcher.slots:
            assert slot.handle.busy == 0 and slot.orphans == 0, slot
        stats = self.rt.pool_stats("m")
        REACHED[self.profile]["restarted"] += stats.restarts
        REACHED[self.profile]["recycled"] += stats.recycled

    def teardown(self) -> None:
        try:
            self._quiesce()
            self.run(self.rt.stop_pool("m"))
            self.run(self.rt.shutdown())
        finally:
            # Every call's outcome is read (the invariant reads them, unless an assertion
            # stopped it first): a task garbage-collected unread logs an ERROR much later, in
            # another test.
            for call in self.calls:
                if call.task.done() and not call.task.cancelled():
                    call.task.exception()
            aiotp.telemetry.detach("model")
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()
            for pid in self.stopped:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and (any(alive(p) for p in self.pids) or descendants()):
            time.sleep(0.02)
        left = [p for p in self.pids if alive(p)]
        assert not left, f"processes of the pool alive after stop: {left}"


class ProcessPoolMachine(PoolMachine):
    profile = "process"


_SETTINGS = settings(
    max_examples=60 if LONG else 12,
    stateful_step_count=40 if LONG else 20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

TestThreadPoolModel = pytest.mark.slow(PoolMachine.TestCase)
TestThreadPoolModel.settings = _SETTINGS
TestProcessPoolModel = pytest.mark.slow(ProcessPoolMachine.TestCase)
TestProcessPoolModel.settings = _SETTINGS


def test_the_model_runs_reached_the_states_they_are_about() -> None:
    """Runs after the two machines (file order): each profile saw timeouts, crashes of held
    requests, cancellations, restarts and recycling, or its invariants were checked in vain."""
    for profile in ("thread", "process"):
        reached = REACHED[profile]
        if not reached:
            pytest.skip("the model tests did not run in this session")
        for state in ("result", "CallTimeout", "WorkerCrashed", "cancelled", "restarted"):
            assert reached[state] > 0, f"{profile} model never reached {state}: {dict(reached)}"
        assert reached["recycled"] > 0, f"{profile} model never recycled: {dict(reached)}"
