"""Cold start of process workers: where the time goes, and `start_pool` against the floor.

The floor is the cheapest child interpreter there is: ``python -S -c pass`` (no ``site``, no
imports), started and waited for. Every row is measured alternately with it in the same run.

Rows (ms, lower is better):
- the parts a worker start is made of, each a whole subprocess start: ``python -c pass`` (adds
  ``site`` and the venv's .pth files), ``python -S -c "import msgpack"`` (the wire codec),
  ``python -c "import aiotp.workers.host"`` (the host's import chain, the way a worker used to
  start), ``python -S`` with the host and the adapter imported (the way a worker starts now);
- the template alone (started, adapter imported, ready to fork), and one fork from it to READY;
- ``await rt.start_pool(...)`` from a fresh Runtime until it returns, 1 worker and 32 workers
  (``startup_batch`` default), with the template (``preload=True``, the default) and without.

    python benchmarks/bench_cold_start.py [--json] [--quick]

Child interpreters inherit the environment: with PYTHONDONTWRITEBYTECODE=1 (as on the shared
machines) aiotp's modules are compiled at every interpreter start, several ms of it; run with
``PYTHONPYCACHEPREFIX=/tmp/pyc`` and without it to see a deployment with cached bytecode.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from harness import Row, alternate, emit, parse_args

import aiotp
from aiotp.runtime.loop import loop_factory

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# Workers of older aiotp versions saw only PYTHONPATH, not our sys.path: kept for comparisons.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)
ADAPTER = "echo_adapter:Echo"
SITE_PACKAGES = next(p for p in sys.path if p.endswith("site-packages"))
# For the -S rows: what a worker gets from its parent instead of `site`.
S_PATH = f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(ROOT)!r}, {SITE_PACKAGES!r}]; "


def subprocess_ms(*argv: str) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *argv], check=True)
        return (time.perf_counter() - t0) * 1e3

    return run


FLOOR = "`python -S -c pass`"
floor = subprocess_ms("-S", "-c", "pass")


def _run(
    factory: Callable[[], asyncio.AbstractEventLoop], coro: Coroutine[Any, Any, float]
) -> float:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


async def pool_start(size: int, preload: bool) -> float:
    async with aiotp.Runtime() as rt:
        t0 = time.perf_counter()
        await rt.start_pool(
            "cold", ADAPTER, profile="process", size=size, preload=preload, heartbeat=None
        )
        elapsed = time.perf_counter() - t0
        await rt.stop_pool("cold")
        return elapsed * 1e3


async def template_then_fork() -> tuple[float, float]:
    """The template alone (start to ready), then one fork from it to READY."""
    from aiotp.workers.process_start import start_process_worker
    from aiotp.workers.zygote_client import Zygote

    t0 = time.perf_counter()
    zygote = await Zygote.start(ADAPTER, None)
    assert zygote is not None, "the template did not start"
    if hasattr(zygote, "wait_ready"):  # Zygote.start returns before the template is ready
        assert await zygote.wait_ready(), "the template did not start"
    t1 = time.perf_counter()
    worker = await start_process_worker(ADAPTER, worker_id="cold-0", zygote=zygote)
    t2 = time.perf_counter()
    worker.kill()
    await zygote.aclose()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3


def main() -> None:
    args = parse_args(__doc__ or "")
    runs = args.runs or (5 if args.quick else 11)
    factory = loop_factory(None)
    _run(factory, pool_start(1, True))  # warm-up: the parent's own imports are paid once
    rows: list[Row] = []
    parts = [
        ("interpreter + site + .pth: `python -c pass`", ("-c", "pass")),
        ("`python -S -c 'import msgpack'`", ("-S", "-c", S_PATH + "import msgpack")),
        (
            "host imports: `python -c 'import aiotp.workers.host'`",
            ("-c", "import aiotp.workers.host"),
        ),
        (
            "host imports without site: `python -S`, host + adapter",
            ("-S", "-c", S_PATH + "import aiotp.workers.host, echo_adapter"),
        ),
    ]
    for name, argv in parts:
        rows.append(alternate(name, "ms", "lower", subprocess_ms(*argv), FLOOR, floor, runs))

    def measured(which: int) -> Callable[[], float]:
        return lambda: _run(factory, template_then_fork())[which]

    rows.append(
        alternate("template ready (Zygote.start)", "ms", "lower", measured(0), FLOOR, floor, runs)
    )
    rows.append(
        alternate(
            "fork from a ready template to READY", "ms", "lower", measured(1), FLOOR, floor, runs
        )
    )
    for size, preload, n in (
        (1, True, runs),
        (1, False, runs),
        (32, True, max(3, runs // 2)),
        (32, False, max(3, runs // 2)),
    ):
        rows.append(
            alternate(
                f"start_pool size={size} preload={preload}",
                "ms",
                "lower",
                lambda size=size, preload=preload: _run(factory, pool_start(size, preload)),
                FLOOR,
                floor,
                n,
                target="<= 20 ms" if size == 1 else "<= 100 ms",
            )
        )
    emit(rows, args.json)


if __name__ == "__main__":
    main()
