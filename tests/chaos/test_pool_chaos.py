"""Chaos under load: callers always get a result or a typed error, and the pool heals.

A pool of 4 process workers (2 threads each) serves 10,000 concurrent calls from 200 caller
tasks while a chaos task SIGKILLs a random worker every 100 ms and now and then SIGSTOPs one
(a hung worker the heartbeat must catch). The assertions are the product's promise:
- every call completes within its timeout with a result or a typed aiotp error;
- successes + typed failures == calls issued (nothing lost, nothing hung);
- the pool is back to full size within 1 s of the last fault;
- no worker process exists after the runtime closes (checked in the process table).

``make chaos`` (AIOTP_CHAOS_LONG=1) runs a longer variant.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import time
from typing import Any

import pytest
from helpers import wait_until

import aiotp

pytestmark = pytest.mark.slow

LONG = os.environ.get("AIOTP_CHAOS_LONG") == "1"
CALLS = 40_000 if LONG else 10_000
CALLERS = 200
CALL_TIMEOUT = 10.0
TYPED = (aiotp.AiotpError,)


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


class ChaosMonkey(aiotp.Actor):
    """Every 100 ms: SIGKILL a random worker of the pool, or (1 in 10) SIGSTOP one."""

    async def init(self, pool: str, seed: int) -> None:
        self.pool = pool
        self.rng = random.Random(seed)
        self.faults: collections.Counter[str] = collections.Counter()
        self.pids: set[int] = set()
        self.last_fault = time.monotonic()
        self.send_after(0.1, "strike")

    async def handle_info(self, msg: Any) -> None:
        self.send_after(0.1, "strike")
        workers = [w for w in self.runtime.pool_stats(self.pool).workers if w.pid]
        if not workers:
            return
        victim = self.rng.choice(workers)
        assert victim.pid is not None
        self.pids.add(victim.pid)
        sig = signal.SIGSTOP if self.rng.random() < 0.1 else signal.SIGKILL
        try:
            os.kill(victim.pid, sig)
        except ProcessLookupError:
            return
        self.faults[sig.name] += 1
        self.last_fault = time.monotonic()


async def _classified_call(
    rt: aiotp.Runtime,
    pool: str,
    tool: str,
    args: dict[str, Any],
    timeout: float,
    outcomes: collections.Counter[str],
) -> float:
    """One call, its outcome counted as "ok", a typed error's name, or UNTYPED; its duration."""
    t0 = time.monotonic()
    try:
        await rt.execute(pool, tool, args, timeout=timeout)
    except TYPED as exc:
        outcomes[type(exc).__name__] += 1
    except BaseException as exc:  # anything untyped breaks the promise
        outcomes[f"UNTYPED {type(exc).__name__}: {exc}"] += 1
    else:
        outcomes["ok"] += 1
    return time.monotonic() - t0


async def _run_callers(
    rt: aiotp.Runtime,
    pool: str,
    tool: str,
    args: dict[str, Any],
    outcomes: collections.Counter[str],
) -> float:
    per_caller = CALLS // CALLERS
    worst = 0.0

    async def caller() -> None:
        nonlocal worst
        for _ in range(per_caller):
            elapsed = await _classified_call(rt, pool, tool, args, CALL_TIMEOUT, outcomes)
            worst = max(worst, elapsed)
            # Hard bound: the call's own timeout plus scheduling slack on 2 busy cores.
            assert elapsed < CALL_TIMEOUT + 2.0

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return worst


async def test_process_pool_under_sigkill_and_sigstop_chaos() -> None:
    outcomes: collections.Counter[str] = collections.Counter()
    async with aiotp.Runtime(shutdown_timeout=5.0) as rt:
        await rt.start_pool(
            "chaos",
            "pool_adapters:Echo",
            profile="process",
            size=4,
            threads_per_worker=2,
            heartbeat=aiotp.Heartbeat(interval=0.2, timeout=0.5, max_missed=2),
            max_restarts=1000,
            max_seconds=1.0,
            checkout_timeout=CALL_TIMEOUT,
            max_queue=CALLS,
        )
        monkey = await rt.spawn(ChaosMonkey, "chaos", 1234)
        worst = await _run_callers(rt, "chaos", "sleep", {"seconds": 0.002}, outcomes)
        chaos: Any = monkey._actor
        faults, seen_pids, last_fault = chaos.faults, chaos.pids, chaos.last_fault
        await rt.stop(monkey)
        await wait_until(
            lambda: (s := rt.pool_stats("chaos")).live == 4 and s.busy == 0, timeout=10
        )
        healed_in = time.monotonic() - last_fault
        for w in rt.pool_stats("chaos").workers:
            assert w.pid is not None
            seen_pids.add(w.pid)
        stats = rt.pool_stats("chaos")
        print(
            f"\nchaos: {CALLS} calls, outcomes={dict(outcomes)}, faults={dict(faults)}, "
            f"restarts={stats.restarts}, healed {healed_in:.2f} s after the last fault, "
            f"max latency {worst:.2f} s"
        )
        assert not [k for k in outcomes if k.startswith("UNTYPED")], outcomes
        assert sum(outcomes.values()) == CALLS
        assert outcomes["ok"] > CALLS // 2
        assert sum(faults.values()) >= 10, faults  # the chaos really ran during the load
        assert healed_in < 1.0 + 0.5  # back to full size within ~1 s of the last fault
        assert stats.restarts >= faults["SIGKILL"] // 2
    for pid in seen_pids:  # SIGSTOPped ones too: the process table, not the pool's view
        await wait_until(lambda pid=pid: not _process_alive(pid), timeout=3)
    await wait_until(lambda: not _children_of(os.getpid()), timeout=3)  # zygotes included


async def test_thread_pool_with_tools_that_raise_and_hang() -> None:
    outcomes: collections.Counter[str] = collections.Counter()
    async with aiotp.Runtime(shutdown_timeout=2.0) as rt:
        await rt.start_pool(
            "tchaos",
            "pool_adapters:Echo",
            profile="thread",
            size=4,
            threads_per_worker=2,
            heartbeat=aiotp.Heartbeat(interval=0.1, timeout=0.3, max_missed=2),
            max_restarts=1000,
            max_seconds=1.0,
            checkout_timeout=CALL_TIMEOUT,
            max_queue=CALLS,
        )
        rng = random.Random(99)
        per_caller = 2_000 // 50

        async def caller() -> None:
            for _ in range(per_caller):
                roll = rng.random()
                tool, args = ("echo", {"value": 1})
                if roll < 0.1:
                    tool, args = ("crash", {"message": "chaos"})
                elif roll < 0.105:
                    tool, args = ("hang", {})
                elapsed = await _classified_call(rt, "tchaos", tool, args, 3.0, outcomes)
                assert elapsed < 5.0

        await asyncio.gather(*(caller() for _ in range(50)))
        await wait_until(lambda: rt.pool_stats("tchaos").live == 4, timeout=5)
        print(f"\nthread chaos: outcomes={dict(outcomes)}, stats={rt.pool_stats('tchaos')}")
        assert not [k for k in outcomes if k.startswith("UNTYPED")], outcomes
        assert sum(outcomes.values()) == 50 * per_caller
        assert outcomes["ToolError"] > 0 and outcomes["ok"] > 0
        assert await rt.execute("tchaos", "echo", {"value": "after"}) == "after"
