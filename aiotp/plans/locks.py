"""Per-resource read-write locks: a plan step holds every resource it reads or writes while it runs.

Steps of one plan, and of every plan that shares a `ResourceLocks`, may touch the same
resources ("db:users", "file:/tmp/x"). Readers of a resource share it; a writer has it alone; a
resource that one step both reads and writes counts as written. ::

    locks = ResourceLocks()

    async with locks.hold(reads={"db:users"}, writes={"cache:users"}):
        ...  # no other step writes db:users, nobody else touches cache:users

    release = locks.try_hold(reads=(), writes={"cache:users"})  # never waits
    if release is not None:
        try:
            ...
        finally:
            release()

What it guarantees:
- All at once. A step takes all of its resources in one step on the loop, or none: it never
  holds some while it waits for others. So no set of steps can deadlock on each other, whatever
  order they name their resources in.
- First come, first served, per resource. Every waiting step has a ticket (its arrival order). The
  rule: a step is granted when, on every resource it names, (1) the holders are compatible with
  it (no holder at all, for a write; no writer, for a read) and (2) no waiter with an earlier
  ticket conflicts with it there (an earlier writer, for a read; any earlier waiter, for a write).
  A `try_hold` and a `hold` that does not have to wait pass the same test, so a newcomer never
  barges past a waiting step it conflicts with.
- No starvation. Once a writer waits for a resource, readers that come later wait behind it: a
  stream of readers cannot keep it out. A waiter is held back only by the present holders, which
  finish, and by earlier conflicting waiters, of which there are finitely many and to which no
  later conflicting step is ever added; by induction on tickets every waiter is granted (given
  that every holder leaves its block).
- No deadlock among waiters. The waiter with the earliest ticket has no earlier waiter, so only
  holders hold it back; a wait-for cycle would need some waiter to wait for a later one, and (2)
  only ever makes a waiter wait for earlier ones.
- Only real conflicts wait. Two steps that share only read resources, or no resource at all,
  never wait for each other, also when a third step is stuck at the head of some other resource.
- Cancel safety. A step cancelled while it waits leaves no trace: it leaves the queues and the
  waiters behind it are looked at again. One cancelled after it was granted but before it got to
  run gives its grant back. Leaving the block, normally or by an exception, releases everything
  and grants whoever can now run.
- Empty ``reads`` and ``writes``: granted at once, whatever is held.

Defaults and why: there are none. No timeout of its own: wrap the ``async with`` in
``asyncio.timeout`` (a timed-out wait is a cancelled wait, which leaves no trace), so that a
step's one deadline covers both its wait and its run.

What it is not: not re-entrant (a step that holds a resource and asks for it again in a
conflicting way waits for itself forever, as with `asyncio.Lock`); not thread-safe (use it from
one event loop); not a concurrency cap (see ``ToolSpec.concurrency_cap``); not shared across
processes.

Cost: a grant, a release or a withdrawal looks only at the resources of the step in question and
at the front of their queues: O(resources of the step x waiters on them), never at all waiters.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import attrs

__all__ = ["LockStatistics", "ResourceLocks"]


@attrs.frozen
class LockStatistics:
    """A snapshot of a `ResourceLocks`.

    ``holding``: steps granted and not yet released; ``waiting``: steps waiting for a grant;
    ``resources_held``: resources with at least one holder; ``readers``: read holds summed over
    resources (a step reading three resources counts three); ``writers``: resources held for
    writing (at most one writer each).
    """

    holding: int
    waiting: int
    resources_held: int
    readers: int
    writers: int


class ResourceLocks:
    """Read-write locks over named resources, taken all at once, granted first come first served.

    See the module docstring for the exact rule and its guarantees.
    """

    def __init__(self) -> None:
        self._resources: dict[str, _Resource] = {}  # only resources held or waited for
        self._tickets = itertools.count(1)
        self._holding = 0
        self._waiting = 0

    def __repr__(self) -> str:
        return (
            f"<ResourceLocks holding={self._holding} waiting={self._waiting} "
            f"resources={len(self._resources)}>"
        )

    def hold(self, reads: Iterable[str], writes: Iterable[str]) -> _Hold:
        """An async context manager holding ``reads`` shared and ``writes`` exclusive inside its
        block; it waits until it can take them all at once. One use only."""
        return _Hold(self, _claim(reads, writes))

    async def acquire(self, reads: Iterable[str], writes: Iterable[str]) -> Callable[[], None]:
        """`hold` for a holder whose release comes later than its block: waits until it has
        everything (cancel-safe, like `hold`) and returns the function that releases it (call
        it once). The plan executor uses it to keep a sync step's resources until its thread
        really ends, even after the step itself timed out."""
        claim = _claim(reads, writes)
        await self._acquire(claim)

        def release() -> None:
            if claim.phase is not _Phase.HELD:
                raise RuntimeError(f"acquire's release called when {claim.phase.name}, not HELD")
            self._release(claim)

        return release

    def try_hold(self, reads: Iterable[str], writes: Iterable[str]) -> Callable[[], None] | None:
        """The non-waiting twin of `hold`: takes everything now and returns the function that
        releases it (call it once), or takes nothing and returns None. It obeys the same rule as
        `hold`: it fails when a waiting step it conflicts with came first."""
        claim = _claim(reads, writes)
        if not self._fits(claim):
            return None
        self._take(claim)

        def release() -> None:
            if claim.phase is not _Phase.HELD:
                raise RuntimeError(f"try_hold's release called when {claim.phase.name}, not HELD")
            self._release(claim)

        return release

    def statistics(self) -> LockStatistics:
        readers = writers = held = 0
        for resource in self._resources.values():
            readers += resource.readers
            writers += resource.writer
            held += resource.readers > 0 or resource.writer
        return LockStatistics(self._holding, self._waiting, held, readers, writers)

    # -- internals: all run synchronously on the loop, so each is one atomic step ------------

    async def _acquire(self, claim: _Claim) -> None:
        if self._fits(claim):  # free, and nobody it conflicts with is waiting: no suspension
            self._take(claim)
            return
        claim.ticket = next(self._tickets)
        claim.future = asyncio.get_running_loop().create_future()
        claim.move(_Phase.WAITING)
        self._waiting += 1
        for name in claim.names:
            resource = self._resources.setdefault(name, _Resource())
            resource.waiters[claim] = None
            if name in claim.writes:
                resource.waiting_writers[claim] = None
        try:
            await claim.future
        except BaseException:
            # Granted in the same loop turn as it was cancelled: the grant is ours, give it
            # back. Still waiting: leave the queues, which may let the waiters behind us run.
            if claim.phase is _Phase.HELD:
                self._release(claim)
            else:
                self._dequeue(claim)
                claim.move(_Phase.DONE)
                self._wake(claim.names)
            raise

    def _fits(self, claim: _Claim) -> bool:
        """The grant rule. A claim not yet queued has no earlier waiter only if nobody it
        conflicts with waits at all (every ticket there is earlier than its own)."""
        queued = claim.phase is _Phase.WAITING
        for name in claim.names:
            resource = self._resources.get(name)
            if resource is None:
                continue
            if name in claim.writes:
                if resource.writer or resource.readers:
                    return False
                first = next(iter(resource.waiters), None)
                if first is not None and first is not claim:
                    return False
            else:
                if resource.writer:
                    return False
                writer = next(iter(resource.waiting_writers), None)
                if writer is not None and (not queued or writer.ticket < claim.ticket):
                    return False
        return True

    def _take(self, claim: _Claim) -> None:
        for name in claim.names:
            resource = self._resources.setdefault(name, _Resource())
            if name in claim.writes:
                resource.writer = True
            else:
                resource.readers += 1
        claim.move(_Phase.HELD)
        self._holding += 1

    def _dequeue(self, claim: _Claim) -> None:
        self._waiting -= 1
        for name in claim.names:
            resource = self._resources[name]
            del resource.waiters[claim]
            resource.waiting_writers.pop(claim, None)
            if resource.idle():
                del self._resources[name]

    def _release(self, claim: _Claim) -> None:
        for name in claim.names:
            resource = self._resources[name]
            if name in claim.writes:
                resource.writer = False
            else:
                resource.readers -= 1
            if resource.idle():
                del self._resources[name]
        claim.move(_Phase.DONE)
        self._holding -= 1
        self._wake(claim.names)

    def _wake(self, names: frozenset[str]) -> None:
        """Grant every waiter that may now run, after the holders or the queues of ``names``
        changed. Only the front of each queue can be ready: the first waiter if it writes, else
        the readers before the first writer (anyone behind a waiting writer is held back by it).
        Granting never frees anyone else (the grantee now holds what it waited for), so one pass
        in ticket order suffices."""
        candidates: dict[_Claim, None] = {}
        for name in names:
            resource = self._resources.get(name)
            if resource is None:
                continue
            for place, waiter in enumerate(resource.waiters):
                if name in waiter.writes:
                    if place == 0:
                        candidates[waiter] = None
                    break
                candidates[waiter] = None
        for waiter in sorted(candidates, key=lambda c: c.ticket):
            # A waiter whose future is already cancelled is on its way out: its own task
            # withdraws it on its next turn (and wakes the queues again then).
            assert waiter.future is not None
            if waiter.phase is _Phase.WAITING and not waiter.future.done() and self._fits(waiter):
                self._dequeue(waiter)
                self._take(waiter)
                waiter.future.set_result(None)


class _Phase(enum.Enum):
    NEW = "NEW"  # made by hold(), not yet entered
    WAITING = "WAITING"  # queued on each of its resources
    HELD = "HELD"  # granted: its resources are held
    DONE = "DONE"  # released, or withdrawn while waiting


_MOVES: dict[_Phase, frozenset[_Phase]] = {
    _Phase.NEW: frozenset({_Phase.WAITING, _Phase.HELD}),
    _Phase.WAITING: frozenset({_Phase.HELD, _Phase.DONE}),
    _Phase.HELD: frozenset({_Phase.DONE}),
    _Phase.DONE: frozenset(),
}


class _Claim:
    """One step's request: what it reads (and does not write), what it writes, where it is."""

    __slots__ = ("future", "names", "phase", "reads", "ticket", "writes")

    def __init__(self, reads: frozenset[str], writes: frozenset[str]) -> None:
        self.writes = writes
        self.reads = reads - writes  # read and written counts as written
        self.names = self.reads | writes
        self.phase = _Phase.NEW
        self.ticket = 0  # set when it starts to wait
        self.future: asyncio.Future[None] | None = None

    def move(self, new: _Phase) -> None:
        if new not in _MOVES[self.phase]:
            raise RuntimeError(f"resource claim cannot go from {self.phase.name} to {new.name}")
        self.phase = new

    def __repr__(self) -> str:
        reads, writes = sorted(self.reads), sorted(self.writes)
        return f"<claim #{self.ticket} {self.phase.name} reads={reads} writes={writes}>"


class _Resource:
    """Holders and waiters of one resource. ``waiters`` (all) and ``waiting_writers`` are dicts
    used as ordered sets: insertion order is ticket order, and removal is O(1)."""

    __slots__ = ("readers", "waiters", "waiting_writers", "writer")

    def __init__(self) -> None:
        self.readers = 0
        self.writer = False
        self.waiters: dict[_Claim, None] = {}
        self.waiting_writers: dict[_Claim, None] = {}

    def idle(self) -> bool:
        return not (self.readers or self.writer or self.waiters)


class _Hold:
    """What `ResourceLocks.hold` returns: ``async with`` it to hold the resources."""

    __slots__ = ("_claim", "_locks")

    def __init__(self, locks: ResourceLocks, claim: _Claim) -> None:
        self._locks = locks
        self._claim = claim

    async def __aenter__(self) -> None:
        if self._claim.phase is not _Phase.NEW:
            raise RuntimeError(f"a hold() is entered once; this one is {self._claim.phase.name}")
        await self._locks._acquire(self._claim)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._locks._release(self._claim)


def _names(what: str, value: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a collection of resource names, got {value!r}")
    names = frozenset(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{what} must hold non-empty strings, got {name!r}")
    return names


def _claim(reads: Iterable[str], writes: Iterable[str]) -> _Claim:
    return _Claim(_names("reads", reads), _names("writes", writes))
