"""The adapter the pool benchmarks run (importable by path from worker processes).

It imports nothing but aiotp at run time (typing only for type checkers): typing is 5-8 ms of
a worker's start, and the start benchmarks measure aiotp's share of it, not the adapter's.
"""

from __future__ import annotations

import aiotp

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing in the worker
if TYPE_CHECKING:
    from typing import Any


class Echo(aiotp.Adapter):
    thread_safe = True

    @aiotp.tool
    def echo(self, value: Any = None) -> Any:
        return value

    @aiotp.tool(idempotent=True)
    def echo_again(self, value: Any = None) -> Any:
        """`echo`, declared idempotent: what a retried call runs."""
        return value

    @aiotp.tool
    def count_in_session(self, *, session: aiotp.WorkerSession | None) -> int:
        """Keeps a counter in the session's worker-side state (the strict-affinity case)."""
        if session is None:
            return 0
        session.state["n"] = session.state.get("n", 0) + 1
        return int(session.state["n"])
