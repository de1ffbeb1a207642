"""The pool side of examples/plan_pipeline.py, in its own module so that process workers can
import it by path ("etl_adapter:ETLAdapter")."""

from __future__ import annotations

import os
import time

import aiotp


class ETLAdapter(aiotp.Adapter):
    thread_safe = True  # pure functions of their arguments

    @aiotp.tool
    def parse(self, region: str, lines: list[str]) -> dict[str, object]:
        time.sleep(0.005)  # some real work
        rows = []
        for line in lines:
            name, amount = line.split(",")
            rows.append({"name": name.strip(), "amount": float(amount)})
        return {"region": region, "rows": rows, "worker": os.getpid()}

    @aiotp.tool
    def score(self, batch: dict[str, object]) -> dict[str, float]:
        rows = batch["rows"]
        assert isinstance(rows, list)
        return {str(r["name"]): round(r["amount"] * 1.2, 2) for r in rows}
