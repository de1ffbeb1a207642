"""The adapter the pool benchmarks run (importable by path from worker processes)."""

from __future__ import annotations

from typing import Any

import aiotp


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
