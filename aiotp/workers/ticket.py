"""A request's hold on its worker, from dispatch until the worker is really done with it.

Why it exists: a caller may stop waiting (its timeout, a cancellation) while the tool it asked
for is still running in the worker. The caller must get its answer at once, but the worker is
still busy: if its slot were handed to the next request, that request would queue behind a
tool nobody waits for (and time out in its turn), and ``pool_stats().busy`` would lie. So the
worker handle ends the ticket only when the worker has really finished with the request (its
reply or error arrived, its thread returned, its task ended, or the worker died), and the pool
frees the slot then, not when the caller left.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Ticket"]


class Ticket:
    """Ends once; `when_ended` callbacks run at that moment (or at once if it already ended).

    ``cancelled`` tells the worker side that nobody waits any more: a request that has not
    started yet is skipped rather than run.
    """

    __slots__ = ("_on_end", "cancelled", "running")

    def __init__(self) -> None:
        self.running = True
        self.cancelled = False
        self._on_end: Callable[[], None] | None = None

    def end(self) -> None:
        if not self.running:
            return
        self.running = False
        callback, self._on_end = self._on_end, None
        if callback is not None:
            callback()

    def when_ended(self, callback: Callable[[], None]) -> None:
        if not self.running:
            callback()
        else:
            self._on_end = callback

    def __repr__(self) -> str:
        state = "running" if self.running else "ended"
        return f"<Ticket {state}{' cancelled' if self.cancelled else ''}>"
