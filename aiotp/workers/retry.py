"""`aiotp.Retry`: how often, and how patiently, a request is tried again after its worker died.

::

    await rt.start_pool("ml", MLAdapter, retry=aiotp.Retry(attempts=3, backoff=0.05))
    await rt.execute("ml", "predict", {...}, retry=aiotp.Retry(attempts=5))   # per call

Rules (the ones a caller can build on):
- Only `WorkerCrashed` is retried, and only for tools declared ``@aiotp.tool(idempotent=True)``:
  a worker that died holding a request may have run it halfway, which is harmless only for an
  idempotent tool. `ToolError`, timeouts and load errors are never retried.
- A request that provably never reached a worker (the worker was gone before a byte was sent)
  is always dispatched again, with or without a `Retry`, for any tool: nothing ran.
- Attempts stay inside the call's ``timeout``: a backoff that would overrun it is not slept,
  and the last `WorkerCrashed` is raised instead.
- With strict affinity a crashed session request is not retried: the session's state died with
  its worker, and the caller gets `SessionWorkerLost` to rebuild it.
- The success path costs nothing more than a flag check.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import attrs

__all__ = ["Retry"]


def _non_negative(name: str) -> Any:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"Retry.{name} must be a number >= 0, got {value!r}")

    return check


@attrs.frozen
class Retry:
    """Up to ``attempts`` tries in all; the n-th retry waits ``backoff * multiplier**(n-1)``
    seconds, capped at ``max_backoff``, scaled by a random factor in [0.5, 1] when ``jitter``
    (so that the callers of one dead worker do not all come back at the same instant)."""

    attempts: int = attrs.field(default=3)
    backoff: float = attrs.field(default=0.05, validator=_non_negative("backoff"))
    multiplier: float = attrs.field(default=2.0, validator=_non_negative("multiplier"))
    max_backoff: float = attrs.field(default=1.0, validator=_non_negative("max_backoff"))
    jitter: bool = attrs.field(default=True)

    @attempts.validator
    def _check_attempts(self, _attr: Any, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"Retry.attempts must be an int >= 1, got {value!r}")

    def delays(self) -> Iterator[float]:
        """The waits before each retry (``attempts - 1`` of them)."""
        delay = self.backoff
        for _ in range(self.attempts - 1):
            wait = min(delay, self.max_backoff)
            yield wait * random.uniform(0.5, 1.0) if self.jitter else wait
            delay *= self.multiplier
