"""The adapter the streaming benchmarks run (importable by path from worker processes)."""

from __future__ import annotations

from collections.abc import Iterator

import aiotp


class Items(aiotp.Adapter):
    thread_safe = True

    @aiotp.tool
    def items(self, n: int, size: int = 1024) -> Iterator[bytes]:
        """`n` items of `size` bytes, as fast as the stream lets them go."""
        item = b"x" * size
        for _ in range(n):
            yield item
