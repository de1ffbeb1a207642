"""An adapter in its own module, so that process workers can import it by path
("ml_adapter:MLAdapter"). Used by examples/pool_process.py and the demo."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import aiotp


class MLAdapter(aiotp.Adapter):
    thread_safe = True  # no shared mutable state: several requests may run at once

    def setup(self) -> None:  # once per worker, inside the worker
        self.weights = [1.0, 2.0]

    @aiotp.tool
    def predict(self, x: float) -> float:
        return x * self.weights[1]

    @aiotp.tool
    def slow_predict(self, x: float, seconds: float = 0.05) -> float:
        time.sleep(seconds)
        return x * self.weights[1]

    @aiotp.tool
    def whoami(self) -> int:
        return os.getpid()

    @aiotp.tool
    def count(self, n: int) -> Iterator[int]:  # a generator tool streams its items
        yield from range(n)

    @aiotp.tool
    def fail(self, message: str) -> None:
        raise ValueError(message)
