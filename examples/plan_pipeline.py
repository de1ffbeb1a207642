"""An ETL plan over a process pool: extract per region (fan-out), parse and score in worker
processes, merge (fan-in), load under a write lock, and the executor's timeline.

Local steps: ``extract`` (async, reads "source:sales"), ``merge`` (sync, in a thread) and
``load`` (async, writes "warehouse:sales"); pool steps: ``parse`` and ``score`` run as tools of
the "etl" pool (examples/etl_adapter.py, importable by path "etl_adapter:ETLAdapter"), declared
idempotent so that a lost worker costs a retry, not the plan. The three regions run at once.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)

import aiotp  # noqa: E402
from aiotp.plans import Planner, PlanStep, pool_tool, tool_spec  # noqa: E402
from aiotp.plans.executor import Executor  # noqa: E402
from aiotp.plans.trace import format_timeline  # noqa: E402

SOURCE = {
    "north": ["ann, 10", "bob, 20"],
    "south": ["cid, 5", "dee, 7.5", "eve, 1"],
    "west": ["fay, 100"],
}
WAREHOUSE: dict[str, float] = {}


@tool_spec(reads={"source:sales"}, idempotent=True, latency_class=aiotp.plans.LatencyClass.FAST)
async def extract(region: str) -> list[str]:
    await asyncio.sleep(0.01)  # a read from somewhere slow
    return SOURCE[region]


@tool_spec(idempotent=True)
def merge(scores: list[dict[str, float]]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for part in scores:
        merged.update(part)
    return dict(sorted(merged.items()))


@tool_spec(writes={"warehouse:sales"})
async def load(table: dict[str, float]) -> int:
    WAREHOUSE.update(table)
    return len(table)


parse = pool_tool("etl", "parse", idempotent=True, timeout=10.0)
score = pool_tool("etl", "score", idempotent=True, concurrency_cap=2, timeout=10.0)


def steps() -> list[PlanStep]:
    out = []
    for region in SOURCE:
        out += [
            PlanStep(
                f"extract_{region}", extract, args={"region": region}, produces={f"lines_{region}"}
            ),
            PlanStep(
                f"parse_{region}",
                parse,
                args={"region": region, "lines": {"$artifact": f"lines_{region}"}},
                produces={f"batch_{region}"},
            ),
            PlanStep(
                f"score_{region}",
                score,
                args={"batch": {"$artifact": f"batch_{region}"}},
                produces={f"scores_{region}"},
            ),
        ]
    out.append(
        PlanStep(
            "merge",
            merge,
            args={"scores": [{"$artifact": f"scores_{r}"} for r in SOURCE]},
            produces={"table"},
        )
    )
    out.append(PlanStep("load", load, args={"table": {"$artifact": "table"}}, produces={"loaded"}))
    return out


async def main(rt: aiotp.Runtime, say: Any = print) -> dict[str, Any]:
    started = time.perf_counter()
    await rt.start_pool("etl", "etl_adapter:ETLAdapter", profile="process", size=2)
    say(f"pool 'etl' of 2 process workers ready in {(time.perf_counter() - started) * 1000:.0f} ms")
    plan = Planner().create_plan(steps())
    levels = Planner().analyze_parallelism(plan)["levels"]
    say(f"{len(plan)} steps in {len(levels)} levels; widest level: {max(map(len, levels))} steps")
    executor = Executor(runtime=rt)
    try:
        artifacts = await executor.execute_plan(plan)
    finally:
        await rt.stop_pool("etl")
    workers = {artifacts[f"batch_{r}"]["worker"] for r in SOURCE}
    say(f"parsed in worker processes {sorted(workers)} (not this one, {os.getpid()})")
    say(f"loaded {artifacts['loaded']} rows: {artifacts['table']}")
    for line in format_timeline(executor.get_trace(), width=40).splitlines():
        say(line)
    return artifacts


if __name__ == "__main__":
    result = aiotp.run(main)
    sys.exit(0 if result["loaded"] == 6 and result["table"] == WAREHOUSE else 1)
