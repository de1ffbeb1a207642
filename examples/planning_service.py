"""An HTN planning service: one gtpyhop planner per user, kept warm in the worker the user is
pinned to, rebuilt from the session store when that worker is lost.

The planner lives in examples/planning_adapter.py ("planning_adapter:Planner"); each user's
settings and blocks world are the metadata of their session in ``rt.sessions``. It shows:

1. one planner per user, built by the user's first call and reused by the later ones, with the
   user's own verbosity and strategy (``affinity="strict_queue"``: always the same worker);
2. two timeouts: ``rt.execute(timeout=)`` bounds how long we wait, gtpyhop's ``timeout_ms``
   bounds the planning itself (so a plan nobody waits for still ends, and frees its worker);
3. sessions exported, deleted and imported one by one, each user carrying on afterwards;
4. a worker SIGKILLed: its users get `aiotp.SessionWorkerLost` once, the service asks again and
   their planners are rebuilt on a live worker; the other users keep theirs.

Needs gtpyhop (``pip install gtpyhop``, in the ``dev`` extra). Runs in about 1.5 s.
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

from planning_adapter import blocks_world  # noqa: E402

import aiotp  # noqa: E402

# 60 towers of 50 blocks: more than gtpyhop can turn upside down within dave's second.
BIG = blocks_world(*([f"b{t}.{i}" for i in range(50)] for t in range(60)))
USERS: dict[str, dict[str, Any]] = {
    "alice": {"verbose": 0, "strategy": "iterative_greedy", "world": blocks_world(["a", "b", "c"])},
    "bob": {"verbose": 2, "strategy": "recursive_dfs", "world": blocks_world(["x", "y"], ["z"])},
    "carol": {
        "verbose": 3,
        "strategy": "iterative_dfs_backtracking",
        "world": blocks_world(["p", "q"]),
    },
    "dave": {"verbose": 0, "strategy": "iterative_greedy", "world": BIG, "timeout_ms": 1000},
}


def upside_down(world: dict[str, Any]) -> dict[str, str]:
    """The goal that turns every tower of the world upside down."""
    goal = {}
    for top in (block for block, clear in world["clear"].items() if clear):
        tower = [top]
        while world["pos"][tower[-1]] != "table":
            tower.append(world["pos"][tower[-1]])
        goal[top] = "table"
        goal.update(zip(tower[1:], tower, strict=False))  # each block on the one it held
    return goal


async def ask(rt: aiotp.Runtime, user: str, goal: dict[str, str], timeout: float = 5.0) -> Any:
    """One plan for `user`. A planner lost with its worker is rebuilt by asking again: the
    retry lands on a live worker with an empty ``session.state``, and the tool rebuilds the
    planner from the session's settings. Every reply's world is checkpointed into the store."""
    args = {"goal": goal}
    try:
        reply = await rt.execute("planners", "plan", args, session=user, timeout=timeout)
    except aiotp.SessionWorkerLost as exc:
        reply = await rt.execute("planners", "plan", args, session=user, timeout=timeout)
        reply["lost"] = exc.worker_id
    rt.sessions.update(user, lambda s: s.put_metadata("world", reply["world"]))
    return reply


def told(reply: dict[str, Any]) -> str:
    done = f"plan of {len(reply['plan'])} steps" if reply["ok"] else reply["error"]
    how = "built" if reply["rebuilt"] else "reused"
    return f"{done}; planner {how} in pid {reply['pid']}, call {reply['calls']}"


def again(rt: aiotp.Runtime, user: str) -> dict[str, str]:
    """The user's next goal: their world, as the store last saw it, upside down."""
    return upside_down(rt.sessions.peek(user).metadata["world"])


def worker_of(rt: aiotp.Runtime, user: str) -> aiotp.WorkerStats:
    worker_id = rt.sessions.peek(user).affinity["planners"]  # the pin, mirrored in the store
    return next(w for w in rt.pool_stats("planners").workers if w.worker_id == worker_id)


async def main(rt: aiotp.Runtime, say: Any = print) -> dict[str, int]:
    await rt.start_pool(
        "planners", "planning_adapter:Planner", profile="process", size=3, affinity="strict_queue"
    )
    for user, settings in USERS.items():
        rt.sessions.create(user, metadata=settings)
        rt.sessions.transition(user, "running")
    small = [u for u in USERS if u != "dave"]

    say("1. one planner per user, on the worker the user is pinned to")
    for user in small:
        settings = USERS[user]
        reply = await ask(rt, user, again(rt, user))
        say(
            f"{user:5}: {told(reply)} ({settings['strategy']}, verbose={settings['verbose']}: "
            f"{reply['trace_lines']} trace lines)"
        )
    for user in small:
        say(f"{user:5}: {told(await ask(rt, user, again(rt, user)))}")

    say("2. timeouts: how long we wait (rt.execute), how long gtpyhop plans (timeout_ms)")
    started = time.perf_counter()
    try:
        await ask(rt, "dave", again(rt, "dave"), timeout=0.25)
    except aiotp.CallTimeout:
        say(
            f"dave : CallTimeout after {time.perf_counter() - started:.2f} s (3,000 blocks to move)"
        )
    reply = await ask(rt, "dave", {"b0.0": "table"})
    say(
        f"dave : his next call queued behind it until gtpyhop gave up at timeout_ms=1000 "
        f"(timeouts={reply['timeouts']}), {time.perf_counter() - started:.2f} s after the first"
    )
    say(f"dave : {told(reply)}")

    say("3. sessions exported, deleted and imported one by one")
    for user in small:
        data = rt.sessions.export(user)
        rt.sessions.delete(user)  # its worker drops the planner
        restored = rt.sessions.import_session(data)
        reply = await ask(rt, user, again(rt, user))
        say(f"{user:5}: {len(data)} bytes, imported ({restored.state}); {told(reply)}")

    say("4. a worker SIGKILLed: its users' planners are rebuilt, the others' are kept")
    victim = worker_of(rt, "alice")
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    say(f"killed {victim.worker_id} (pid {victim.pid}), which held alice's planner")
    goals = {u: {"b0.1": "b0.0"} if u == "dave" else again(rt, u) for u in USERS}
    replies = await asyncio.gather(*(ask(rt, u, goal) for u, goal in goals.items()))
    lost = 0
    for user, reply in zip(USERS, replies, strict=True):
        if "lost" in reply:
            lost += 1
            say(f"{user:5}: SessionWorkerLost ({reply['lost']}), asked again: {told(reply)}")
        else:
            say(f"{user:5}: {told(reply)}")
    async with asyncio.timeout(5.0):  # the pool replaces the worker meanwhile
        while (stats := rt.pool_stats("planners")).live < stats.size:
            await asyncio.sleep(0.01)
    say(f"pool: {stats.live} of {stats.size} workers live again, {stats.restarts} restart(s)")
    for user in USERS:
        rt.sessions.transition(user, "done")
    await rt.stop_pool("planners")
    return {"lost": lost, "rebuilt": sum(r["rebuilt"] for r in replies)}


if __name__ == "__main__":
    result = aiotp.run(main)
    sys.exit(0 if result["lost"] >= 1 and result["rebuilt"] == result["lost"] else 1)
