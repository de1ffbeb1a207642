"""Three guarantees, shown with real output (the demo prints the whole table at its end).

1. A caller of an actor killed mid-call gets `ActorExited` at once, even with ``timeout=None``;
   so does a caller still queued in its mailbox.
2. A pool call that times out keeps its worker busy (``pool_stats().busy``) while other calls go
   to the free worker; the sync tool cannot be interrupted, so after ``cancel_grace`` the worker
   is recycled: replaced, then killed.
3. A SIGKILLed worker fails only the request it held (`WorkerCrashed`); a request still queued in
   the pool is served by its replacement.

Each part asserts what it shows: an AssertionError (and a non-zero exit) if a guarantee breaks.
"""

from __future__ import annotations

import asyncio
import os
import signal
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

ADAPTER = "ml_adapter:MLAdapter"

# situation | what the caller gets | what you may assume (the README's table, abridged).
GUARANTEES: list[tuple[str, str, str]] = [
    (
        "actor dies mid-call (kill, exit signal)",
        "ActorExited(reason) at once, even with timeout=None",
        "the request may or may not have run",
    ),
    ("call or execute times out", "CallTimeout", "it may still run; a late reply is dropped"),
    (
        "pool caller times out or is cancelled",
        "CallTimeout / CancelledError at once",
        "the worker stays busy until the tool ends; recycled after cancel_grace",
    ),
    (
        "pool worker dies",
        "WorkerCrashed, only for the requests it held",
        "they may have run; queued requests go to the next worker",
    ),
    ("tool raises", "ToolError (type, message, traceback)", "the worker keeps serving"),
    ("unknown tool", "UnknownTool", "nothing ran"),
    ("arguments msgpack cannot carry", "SerializationError", "nothing was sent"),
    ("queue full / no free worker in time", "PoolBusy / CheckoutTimeout", "nothing ran"),
    (
        "spawn / start_pool / shutdown cancelled",
        "CancelledError",
        "nothing half-started is left behind",
    ),
    (
        "request cut by a clean shutdown",
        "PoolBusy / WorkerCrashed / CallTimeout",
        "no process, task or job outlives the runtime",
    ),
    (
        "stream consumer is slow / leaves early",
        "items in order, a window of 64 ahead",
        "the generator pauses / is closed in the worker",
    ),
    (
        "session read from another thread",
        "a copy of one committed state",
        "never half an update",
    ),
]


class Stuck(aiotp.Actor):
    """Answers nothing: its handle_call waits for ever (until it is killed)."""

    async def init(self, entered: asyncio.Event) -> None:
        self.entered = entered

    async def handle_call(self, msg: Any, caller: Any) -> Any:
        self.entered.set()
        await asyncio.Event().wait()


async def killed_mid_call(rt: aiotp.Runtime, say: Any) -> None:
    entered = asyncio.Event()
    ref = await rt.spawn(Stuck, entered)
    running = asyncio.create_task(ref.call("work", timeout=None))
    queued = asyncio.create_task(ref.call("more", timeout=None))
    await entered.wait()  # the first call is running, the second waits in the mailbox
    killed_at = time.perf_counter()
    rt.exit(ref, "kill")
    outcomes = await asyncio.gather(running, queued, return_exceptions=True)
    took_us = (time.perf_counter() - killed_at) * 1e6
    for label, out in zip(("running call", "queued call "), outcomes, strict=True):
        assert isinstance(out, aiotp.ActorExited) and out.reason == "killed", out
        say(f"{label} (timeout=None): ActorExited, reason={out.reason!r}")
    assert took_us < 100_000, f"callers learned of the death after {took_us:.0f} us"
    say(f"both callers knew {took_us:.0f} us after the kill")


async def timed_out_call_keeps_worker_busy(rt: aiotp.Runtime, say: Any) -> None:
    await rt.start_pool(
        "g-timeout", ADAPTER, profile="process", size=2, heartbeat=None, cancel_grace=0.3
    )
    try:
        await rt.execute("g-timeout", "slow_predict", {"x": 1, "seconds": 30}, timeout=0.2)
    except aiotp.CallTimeout:
        say("slow_predict(seconds=30), timeout=0.2: CallTimeout")
    else:
        raise AssertionError("the slow call did not time out")
    stats = rt.pool_stats("g-timeout")
    stuck = next(w for w in stats.workers if w.busy)
    say(f"pool_stats().busy = {stats.busy}: worker pid {stuck.pid} still runs the abandoned tool")
    assert stats.busy == 1
    served = {await rt.execute("g-timeout", "whoami", {}, timeout=1.0) for _ in range(5)}
    assert stuck.pid not in served, "a new call went to the busy worker"
    say(f"5 new calls served by the free worker: pid {', '.join(map(str, sorted(served)))}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while stuck.pid in {w.pid for w in rt.pool_stats("g-timeout").workers} or _alive(stuck.pid):
        assert loop.time() < deadline, "the overrunning worker was not recycled and killed"
        await asyncio.sleep(0.01)
    stats = rt.pool_stats("g-timeout")
    assert stats.recycled == 1 and stats.live == 2 and stats.busy == 0, stats
    say(
        f"after cancel_grace=0.3 s: pid {stuck.pid} recycled (replaced, process killed); "
        f"live={stats.live} busy={stats.busy} recycled={stats.recycled}"
    )
    await rt.stop_pool("g-timeout")


async def sigkill_fails_only_its_request(rt: aiotp.Runtime, say: Any) -> None:
    await rt.start_pool("g-kill", ADAPTER, profile="process", size=1, heartbeat=None)
    victim = rt.pool_stats("g-kill").workers[0].pid
    assert victim is not None
    held = asyncio.create_task(
        rt.execute("g-kill", "slow_predict", {"x": 1, "seconds": 30}, timeout=10)
    )
    while rt.pool_stats("g-kill").busy == 0:
        await asyncio.sleep(0.001)
    queued = asyncio.create_task(rt.execute("g-kill", "predict", {"x": 21}, timeout=10))
    while rt.pool_stats("g-kill").queued == 0:
        await asyncio.sleep(0.001)
    say(f"worker pid {victim} runs slow_predict; predict(x=21) waits in the pool's queue")
    killed_at = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    try:
        await held
    except aiotp.WorkerCrashed as exc:
        say(
            f"SIGKILL -> the held request: WorkerCrashed ({exc}) after "
            f"{(time.perf_counter() - killed_at) * 1000:.1f} ms"
        )
    else:
        raise AssertionError("the request held by the killed worker succeeded")
    result = await queued
    served_ms = (time.perf_counter() - killed_at) * 1000
    assert result == 42.0, result
    stats = rt.pool_stats("g-kill")
    say(
        f"the queued request: {result} from the replacement, pid {stats.workers[0].pid}, "
        f"{served_ms:.1f} ms after the kill (restarts={stats.restarts})"
    )
    await rt.stop_pool("g-kill")


def _alive(pid: int | None) -> bool:
    try:
        os.kill(pid, 0)  # type: ignore[arg-type]
    except ProcessLookupError:
        return False
    return True


def table() -> list[str]:
    """The guarantees as plain text: situation -> what the caller gets."""
    width = max(len(situation) for situation, _, _ in GUARANTEES)
    return [f"{situation:<{width}}  ->  {gets}" for situation, gets, _ in GUARANTEES]


async def main(rt: aiotp.Runtime, say: Any = print) -> None:
    for title, part in (
        ("an actor killed mid-call", killed_mid_call),
        ("a pool call that times out", timed_out_call_keeps_worker_busy),
        ("a worker SIGKILLed with a request queued", sigkill_fails_only_its_request),
    ):
        say(f"-- {title}")
        await part(rt, say)


if __name__ == "__main__":
    aiotp.run(main)
    print()
    print("\n".join(table()))
