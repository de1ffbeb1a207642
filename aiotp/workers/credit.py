"""Credit-based flow control for streams: the window, and a gate for producers on threads.

The problem: a generator tool can produce faster than its consumer reads. Without a bound, the
difference piles up somewhere (in the caller's process, for worker processes) until memory runs
out. So a producer starts with `WINDOW` credits, spends one per item, and stops when it has
none; the consumer gives credit back as it takes items, in batches of `CREDIT_BATCH` so that a
fast consumer sends one CREDIT frame (or takes one lock) per 32 items, not per item.

Invariant: items produced <= items taken by the consumer + WINDOW.

Defaults and why:
- ``WINDOW = 64`` items: enough that a producer and a fast consumer never wait on each other (a
  credit round trip is shorter than producing 32 items), small enough that a stalled consumer
  holds little: 64 KiB of 1 KiB items.
- ``CREDIT_BATCH = WINDOW // 2``: credit goes back while the producer still has half a window to
  spend, so it does not stall waiting for it.

This module imports nothing heavy: the worker process's host uses it too (threading comes
with the first `CreditGate`, which only threaded lanes make, once their thread pool imported it).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in a worker process
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CREDIT_BATCH", "WINDOW", "CreditGate"]

WINDOW = 64
CREDIT_BATCH = WINDOW // 2


class CreditGate:
    """Credit handed from the thread that reads CREDIT frames to the thread producing items.

    Not a semaphore per item: the producer takes all the credit there is at once (`take`), so
    it touches the lock once per batch, not once per item.
    """

    __slots__ = ("_cond", "_credit")

    def __init__(self, credit: int = 0) -> None:
        import threading

        self._cond = threading.Condition(threading.Lock())
        self._credit = credit

    def grant(self, n: int) -> None:
        with self._cond:
            self._credit += n
            self._cond.notify()

    def take(self, stop: Callable[[], bool], poll: float = 0.05) -> int:
        """All the credit there is, waiting for some; 0 once `stop()` is true.

        `stop` is re-checked every `poll` seconds: a CANCEL reaches the producer through it
        without the canceller having to know about this gate.
        """
        with self._cond:
            while self._credit <= 0:
                if stop():
                    return 0
                self._cond.wait(poll)
            credit, self._credit = self._credit, 0
            return credit
