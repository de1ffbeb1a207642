"""An HTN planner per session, on gtpyhop's blocks world ("planning_adapter:Planner").

Used by examples/planning_service.py. It lives in its own module so that process workers can
import it by path, as examples/ml_adapter.py does.

What a session's settings (its ``metadata`` in ``rt.sessions``) hold, all msgpack types:
  ``verbose`` (gtpyhop's 0-3), ``strategy`` (a gtpyhop strategy name, default
  ``"iterative_greedy"``), ``timeout_ms`` (gtpyhop's own bound on one plan, default 1000) and
  ``world``, the user's blocks world as ``{"pos": {...}, "clear": {...}, "holding": {...}}``:
  the durable copy the service keeps, from which a lost planner is rebuilt.
What ``session.state`` holds, in the worker the session is pinned to only: the gtpyhop
``PlannerSession``, the live world (a ``gtpyhop.State``) and a call counter. It is built on the
session's first call, reused by the later ones, and gone with the worker or the session.

gtpyhop facts this relies on (2.0.2):
- ``PlannerSession.find_plan(timeout_ms=)`` is enforced with SIGALRM in whole seconds (at least
  one), so it needs the process's main thread: a process worker with ``threads_per_worker=1``
  runs its tools there. Keep it below the pool's ``cancel_grace`` (2.0 s): then a plan whose
  caller stopped waiting ends before the pool would recycle the worker, and with it every
  session pinned there.
- Its sessions still set the module's globals (domain, verbosity, strategy) around each plan and
  print through ``sys.stdout``, hence ``thread_safe = False`` and the captured output.
- ``gtpyhop.create_session`` and ``set_persistence_directory`` install SIGTERM/SIGINT handlers
  in the worker, and its session files hold settings and counters but not the problem; so a
  planner here is a plain ``PlannerSession``, rebuilt from the store's copy of the world.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

os.environ.setdefault("GTPYHOP_QUIET", "true")  # no import banner from every worker

with contextlib.redirect_stdout(io.StringIO()):  # blocks_htn prints a greeting on import
    import gtpyhop
    from gtpyhop.examples.blocks_htn import actions, the_domain

import aiotp

__all__ = ["Planner", "blocks_world"]


def blocks_world(*towers: list[str]) -> dict[str, Any]:
    """A world as msgpack data; each tower lists its blocks from the top down:
    ``blocks_world(["a", "b"])`` is a on b, b on the table, and the hand empty."""
    pos: dict[str, str] = {}
    clear: dict[str, bool] = {}
    for blocks in towers:
        pos.update(zip(blocks, [*blocks[1:], "table"], strict=True))
        clear.update((b, i == 0) for i, b in enumerate(blocks))
    return {"pos": pos, "clear": clear, "holding": {"hand": False}}


class Planner(aiotp.Adapter):
    # One request at a time per worker: gtpyhop swaps module globals around each plan.
    thread_safe = False

    @aiotp.tool
    def plan(self, goal: dict[str, str], *, session: aiotp.WorkerSession | None) -> dict[str, Any]:
        """Plan to put blocks where ``goal`` says (block -> block or "table"), from the
        session's world; a plan found is carried out on that world."""
        if session is None:
            raise ValueError("plan needs session=: each user's planner lives in their session")
        state, settings = session.state, session.settings
        rebuilt = not state
        if rebuilt:  # first call of the session on this worker: build its planner
            state["planner"] = gtpyhop.PlannerSession(
                session.id,
                domain=the_domain,
                verbose=settings.get("verbose", 0),
                strategy=settings.get("strategy", "iterative_greedy"),
                # No per-session logger: nothing would close it when the state is dropped.
                structured_logging=False,
            )
            state["world"] = gtpyhop.State(session.id, **settings["world"])
            state["calls"] = 0
        state["calls"] += 1
        planner, world = state["planner"], state["world"]
        todo = [("achieve", gtpyhop.Multigoal("goal", pos=dict(goal)))]
        with contextlib.redirect_stdout(io.StringIO()) as out:
            result = planner.find_plan(world, todo, timeout_ms=settings.get("timeout_ms", 1000))
        if result.success:
            world = world.copy(session.id)  # carry the plan out on a copy of the world
            for name, *args in result.plan:
                getattr(actions, name)(world, *args)
            state["world"] = world
        return {
            "ok": result.success,
            "plan": [list(step) for step in result.plan],
            "error": result.error,
            "world": {"pos": world.pos, "clear": world.clear, "holding": world.holding},
            "calls": state["calls"],
            "rebuilt": rebuilt,
            "timeouts": planner.get_stats()["timeouts"],
            "trace_lines": sum(1 for line in out.getvalue().splitlines() if _is_trace(line)),
            "pid": os.getpid(),
        }


def _is_trace(line: str) -> bool:  # gtpyhop also says so each time it sets its verbosity
    return bool(line) and not line.startswith("Verbose level set to")
