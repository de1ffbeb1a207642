"""ResourceLocks: readers share, a writer is alone, all of a step's resources are taken at once,
waiters are served first come first served per resource, and cancellation leaves no trace.

Overlap and exclusion are recorded by counters inside the blocks, never inferred from timing;
"has not got in" is checked after the loop has had every chance to run it (`settle`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiotp.plans.locks import LockStatistics, ResourceLocks

IDLE = LockStatistics(holding=0, waiting=0, resources_held=0, readers=0, writers=0)


async def settle() -> None:
    """Let every task that can run, run (a grant, an exit and a wake-up take a turn each)."""
    for _ in range(10):
        await asyncio.sleep(0)


class Holder:
    """A task that holds its resources until told to leave; ``inside`` says whether it got in."""

    def __init__(self, locks: ResourceLocks, reads: Iterable[str], writes: Iterable[str]) -> None:
        self.inside = False
        self.ran = False
        self.leave = asyncio.Event()
        self.task = asyncio.create_task(self._run(locks, list(reads), list(writes)))

    async def _run(self, locks: ResourceLocks, reads: list[str], writes: list[str]) -> None:
        async with locks.hold(reads, writes):
            self.inside = self.ran = True
            try:
                await self.leave.wait()
            finally:
                self.inside = False

    async def done(self) -> None:
        self.leave.set()
        await self.task


async def test_readers_share_a_resource() -> None:
    locks = ResourceLocks()
    inside = 0
    all_in = asyncio.Event()

    async def reader() -> None:
        nonlocal inside
        async with locks.hold(reads={"db"}, writes=()):
            inside += 1
            if inside == 3:
                all_in.set()
            await all_in.wait()  # returns only if all three are inside together
            inside -= 1

    async with asyncio.timeout(5):
        await asyncio.gather(reader(), reader(), reader())
    assert locks.statistics() == IDLE


async def test_a_writer_holds_its_resource_alone() -> None:
    locks = ResourceLocks()
    readers = writers = 0
    seen: list[tuple[int, int]] = []

    async def step(write: bool) -> None:
        nonlocal readers, writers
        async with locks.hold(() if write else ["r"], ["r"] if write else ()):
            if write:
                writers += 1
            else:
                readers += 1
            for _ in range(3):
                seen.append((readers, writers))
                await asyncio.sleep(0)
            if write:
                writers -= 1
            else:
                readers -= 1

    async with asyncio.timeout(5):
        await asyncio.gather(*(step(write=i % 3 == 0) for i in range(30)))
    assert all(w == 0 or (w == 1 and r == 0) for r, w in seen), seen
    assert max(r for r, _ in seen) > 1  # readers did share


async def test_a_resource_both_read_and_written_counts_as_written() -> None:
    locks = ResourceLocks()
    both = Holder(locks, reads=["r"], writes=["r"])
    await settle()
    assert both.inside
    assert locks.statistics() == LockStatistics(1, 0, 1, readers=0, writers=1)
    assert locks.try_hold(reads=["r"], writes=()) is None
    await both.done()
    assert locks.statistics() == IDLE


async def test_a_waiting_writer_goes_before_readers_that_came_later() -> None:
    locks = ResourceLocks()
    first = Holder(locks, reads=["r"], writes=())
    await settle()
    writer = Holder(locks, reads=(), writes=["r"])
    await settle()
    late_reader = Holder(locks, reads=["r"], writes=())
    await settle()
    assert first.inside and not writer.inside
    assert not late_reader.inside  # it could share with `first`, but the writer came before it
    await first.done()
    await settle()
    assert writer.inside and not late_reader.inside
    await writer.done()
    await settle()
    assert late_reader.inside
    await late_reader.done()


async def test_a_stream_of_readers_cannot_starve_a_waiting_writer() -> None:
    """Each reader lets the next one in before it leaves, so readers alone would overlap
    forever; the writer gets in after the readers that were there before it."""
    locks = ResourceLocks()
    entered: list[str] = []
    writer_done = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def reader(n: int) -> None:
        async with locks.hold(["r"], ()):
            entered.append(f"reader{n}")
            if not writer_done.is_set() and n < 200:
                tasks.append(asyncio.create_task(reader(n + 1)))  # arrives while we hold
            await settle()

    async def writer() -> None:
        async with locks.hold((), ["r"]):
            entered.append("writer")
        writer_done.set()

    async with asyncio.timeout(10):
        tasks.append(asyncio.create_task(reader(0)))
        while not entered:
            await asyncio.sleep(0)
        await writer()
        while tasks:
            await tasks.pop()
    assert entered.index("writer") <= 2, entered
    assert locks.statistics() == IDLE


async def test_a_step_stuck_at_the_head_of_one_resource_blocks_only_conflicting_steps() -> None:
    locks = ResourceLocks()
    holder = Holder(locks, reads=(), writes=["a"])
    await settle()
    stuck = Holder(locks, reads=["b"], writes=["a"])  # waits for a, and has queued on b
    await settle()
    reader_b = Holder(locks, reads=["b"], writes=())  # shares b with `stuck`: no conflict
    writer_c = Holder(locks, reads=(), writes=["c"])  # unrelated
    writer_b = Holder(locks, reads=(), writes=["b"])  # conflicts with the earlier `stuck` on b
    await settle()
    assert not stuck.inside and reader_b.inside and writer_c.inside
    assert not writer_b.inside
    await holder.done()
    await settle()
    assert stuck.inside and not writer_b.inside
    await stuck.done()
    await reader_b.done()
    await settle()
    assert writer_b.inside
    for h in (writer_b, writer_c):
        await h.done()
    assert locks.statistics() == IDLE


@pytest.mark.parametrize("seed", range(5))
async def test_steps_naming_resources_in_any_order_never_deadlock(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"r{i}" for i in range(6)]
    locks = ResourceLocks()
    readers = dict.fromkeys(names, 0)
    writers = dict.fromkeys(names, 0)
    finished = 0

    async def step() -> None:
        nonlocal finished
        chosen = rng.sample(names, rng.randint(1, 4))  # a random order, too
        writes = [n for n in chosen if rng.random() < 0.5]
        reads = [n for n in chosen if n not in writes or rng.random() < 0.3]
        async with locks.hold(reads, writes):
            for n in chosen:
                if n in writes:
                    writers[n] += 1
                else:
                    readers[n] += 1
            for _ in range(rng.randint(0, 3)):
                assert all(w <= 1 and (w == 0 or readers[n] == 0) for n, w in writers.items())
                await asyncio.sleep(0)
            for n in chosen:
                if n in writes:
                    writers[n] -= 1
                else:
                    readers[n] -= 1
        finished += 1

    async with asyncio.timeout(10):
        await asyncio.gather(*(step() for _ in range(300)))
    assert finished == 300
    assert locks.statistics() == IDLE


async def test_a_waiter_cancelled_leaves_no_trace_and_the_next_waiter_runs() -> None:
    locks = ResourceLocks()
    reading = Holder(locks, reads=["r"], writes=())
    await settle()
    writer = Holder(locks, reads=(), writes=["r", "s"])
    await settle()
    reader = Holder(locks, reads=["r"], writes=())  # behind the waiting writer
    await settle()
    assert not reader.inside
    assert locks.statistics().waiting == 2
    writer.task.cancel()
    await settle()
    assert reader.inside  # the only conflict it waited for has gone
    assert writer.task.cancelled() and not writer.ran
    assert locks.statistics() == LockStatistics(2, 0, 1, readers=2, writers=0)
    await reading.done()
    await reader.done()
    assert locks.statistics() == IDLE


async def test_a_wait_that_times_out_leaves_no_trace() -> None:
    locks = ResourceLocks()
    release = locks.try_hold((), ["r"])
    assert release is not None
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01), locks.hold(["r"], ()):
            pytest.fail("got in while r was written")
    assert locks.statistics() == LockStatistics(1, 0, 1, readers=0, writers=1)
    release()
    assert locks.statistics() == IDLE


async def test_a_step_cancelled_after_its_grant_before_it_runs_gives_the_grant_back() -> None:
    locks = ResourceLocks()
    release = locks.try_hold((), ["r"])
    assert release is not None
    granted = Holder(locks, reads=(), writes=["r"])
    await settle()
    release()  # grants `granted` now; it runs on a later turn of the loop
    assert locks.statistics().holding == 1 and not granted.inside
    granted.task.cancel()  # ... but it is cancelled first
    await settle()
    assert granted.task.cancelled() and not granted.ran
    assert locks.statistics() == IDLE
    assert locks.try_hold((), ["r"]) is not None


async def test_an_exception_inside_the_block_releases_and_wakes_the_next_step() -> None:
    locks = ResourceLocks()
    waiter = Holder(locks, reads=["r"], writes=())
    with pytest.raises(ValueError):
        async with locks.hold((), ["r"]):
            await settle()
            assert not waiter.inside
            raise ValueError("boom")
    await settle()
    assert waiter.inside
    await waiter.done()
    assert locks.statistics() == IDLE


async def test_try_hold_takes_all_or_nothing_and_its_release_runs_once() -> None:
    locks = ResourceLocks()
    first = locks.try_hold(["a", "b"], ["c"])
    assert first is not None
    assert locks.try_hold(["a"], ()) is not None  # readers share
    assert locks.try_hold(["a"], ["c"]) is None  # c is written: nothing taken
    assert locks.statistics() == LockStatistics(2, 0, 3, readers=3, writers=1)
    first()
    with pytest.raises(RuntimeError, match="DONE"):
        first()
    assert locks.statistics() == LockStatistics(1, 0, 1, readers=1, writers=0)


async def test_try_hold_does_not_barge_past_a_waiting_writer() -> None:
    locks = ResourceLocks()
    reading = locks.try_hold(["r"], ())
    assert reading is not None
    writer = Holder(locks, (), ["r"])
    await settle()
    assert locks.try_hold(["r"], ()) is None  # would share with `reading`, but the writer waits
    assert locks.try_hold(["other"], ()) is not None
    reading()
    await settle()
    assert writer.inside
    await writer.done()


async def test_empty_reads_and_writes_are_granted_at_once() -> None:
    locks = ResourceLocks()
    release = locks.try_hold((), ["r"])
    assert release is not None
    Holder(locks, ["r"], ())  # a waiter, too
    await settle()
    async with asyncio.timeout(1), locks.hold((), ()):
        pass
    empty = locks.try_hold(set(), frozenset())
    assert empty is not None
    empty()
    release()


async def test_misuse_is_refused() -> None:
    locks = ResourceLocks()
    with pytest.raises(TypeError, match="reads"):
        locks.hold("db:users", ())  # a string is not a set of names
    with pytest.raises(TypeError, match="writes"):
        locks.try_hold((), [1])  # type: ignore[list-item]
    hold = locks.hold(["r"], ())
    async with hold:
        pass
    with pytest.raises(RuntimeError, match="entered once"):
        async with hold:
            pass
    assert locks.statistics() == IDLE


# -- a state machine: random steps entering and leaving in random order --------------------

RESOURCES = ["a", "b", "c", "d"]
NAME_SETS = st.frozensets(st.sampled_from(RESOURCES), max_size=3)


class _Step:
    def __init__(self, n: int, reads: frozenset[str], writes: frozenset[str]) -> None:
        self.n = n
        self.writes = writes
        self.reads = reads - writes
        self.state = "waiting"  # -> inside -> done, or -> withdrawn (cancelled before running)
        self.leave = asyncio.Event()
        self.fail = False
        self.task: asyncio.Task[None] | None = None
        self.release: Callable[[], None] | None = (
            None  # try_hold's release, for steps taken with try_hold
        )

    def conflicts(self, other: _Step) -> bool:
        return bool(
            self.writes & (other.reads | other.writes) or other.writes & (self.reads | self.writes)
        )


class LocksMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.locks = ResourceLocks()
        self.steps: list[_Step] = []  # in arrival order, which is ticket order

    def settle(self) -> None:
        self.loop.run_until_complete(settle())

    def in_state(self, state: str) -> list[_Step]:
        return [s for s in self.steps if s.state == state]

    async def _run(self, step: _Step) -> None:
        try:
            async with self.locks.hold(step.reads, step.writes):
                step.state = "inside"
                try:
                    await step.leave.wait()
                    if step.fail:
                        raise ValueError("failed inside the block")
                finally:
                    step.state = "done"
        except ValueError:
            pass
        except asyncio.CancelledError:
            if step.state == "waiting":
                step.state = "withdrawn"
            raise

    @rule(reads=NAME_SETS, writes=NAME_SETS)
    def arrive(self, reads: frozenset[str], writes: frozenset[str]) -> None:
        step = _Step(len(self.steps), reads, writes)
        self.steps.append(step)
        step.task = self.loop.create_task(self._run(step))
        self.settle()

    @rule(reads=NAME_SETS, writes=NAME_SETS)
    def try_hold(self, reads: frozenset[str], writes: frozenset[str]) -> None:
        step = _Step(len(self.steps), reads, writes)
        expected = not any(
            step.conflicts(o) for o in self.steps if o.state in ("inside", "waiting")
        )
        release = self.locks.try_hold(reads, writes)
        assert (release is not None) == expected
        if release is not None:
            step.state, step.release = "inside", release
            self.steps.append(step)

    def _leave(self, step: _Step, fail: bool) -> None:
        if step.task is None:
            assert step.release is not None
            step.release()
            step.state = "done"
        else:
            step.fail = fail
            step.leave.set()

    @precondition(lambda self: self.in_state("inside"))
    @rule(pick=st.integers(0, 99), fail=st.booleans())
    def leave(self, pick: int, fail: bool) -> None:
        inside = self.in_state("inside")
        self._leave(inside[pick % len(inside)], fail)
        self.settle()

    @precondition(lambda self: self.in_state("waiting") or self.in_state("inside"))
    @rule(pick=st.integers(0, 99))
    def cancel(self, pick: int) -> None:
        tasks = [s for s in self.steps if s.task is not None and s.state in ("inside", "waiting")]
        if tasks:
            victim = tasks[pick % len(tasks)].task
            assert victim is not None
            victim.cancel()
        self.settle()

    @precondition(
        lambda self: (
            any(s.task is None for s in self.in_state("inside")) and self.in_state("waiting")
        )
    )
    @rule(pick=st.integers(0, 99))
    def release_then_cancel_in_one_turn(self, pick: int) -> None:
        """A try_hold release grants waiters at once; cancel one before it gets to run."""
        holder = next(s for s in self.in_state("inside") if s.task is None)
        self._leave(holder, fail=False)
        waiting = self.in_state("waiting")
        victim = waiting[pick % len(waiting)].task
        assert victim is not None
        victim.cancel()
        self.settle()

    @invariant()
    def a_writer_is_alone(self) -> None:
        inside = self.in_state("inside")
        for name in RESOURCES:
            users = [s for s in inside if name in s.reads | s.writes]
            if any(name in s.writes for s in users):
                assert len(users) == 1, (name, users)

    @invariant()
    def every_waiter_waits_for_a_reason_and_none_was_overtaken(self) -> None:
        inside = self.in_state("inside")
        waiting = self.in_state("waiting")
        for w in waiting:
            blocked = any(w.conflicts(h) for h in inside) or any(
                w.conflicts(e) for e in waiting if e.n < w.n
            )
            assert blocked, f"step {w.n} waits for nothing"
            # no step that came later and conflicts with it got in first
            assert not any(h.n > w.n and w.conflicts(h) for h in inside), w.n

    @invariant()
    def statistics_agree(self) -> None:
        stats = self.locks.statistics()
        assert stats.holding == len(self.in_state("inside"))
        assert stats.waiting == len(self.in_state("waiting"))

    def teardown(self) -> None:
        try:
            for _ in range(len(self.steps) + 1):
                for step in self.in_state("inside"):
                    self._leave(step, fail=False)
                self.settle()
            assert not self.in_state("waiting"), "steps still waiting after everyone left"
            assert all(s.state in ("done", "withdrawn") for s in self.steps)
            assert all(s.task is None or s.task.done() for s in self.steps)
            assert self.locks.statistics() == IDLE
        finally:
            for step in self.steps:
                if step.task is not None and not step.task.done():
                    step.task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()


LocksMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_locks_state_machine = LocksMachine.TestCase
