"""Links, monitors and exit signals: how the death of one actor reaches the others.

OTP semantics, which the tests pin down:
- A link is two-way. When an actor exits with a reason other than ``"normal"``, every linked
  actor gets an exit signal with that reason (``"kill"`` is seen as ``"killed"``). A linked actor
  that does not trap exits dies with the same reason; a trapping one gets `Exit(sender, reason)`.
- ``"kill"`` cannot be trapped: the target dies at once with reason ``"killed"`` and its
  `terminate` does not run.
- ``rt.exit(ref, "normal")`` is ignored by a non-trapping actor, as in OTP.
- A monitor is one-way and stacks: each `monitor` call gives its own `Down`. Monitoring an actor
  that is already dead delivers `Down(..., "noproc")` at once.
- When an actor dies every caller waiting on it fails at once with `ActorExited`: those whose
  call it was handling, those it deferred (NOREPLY), and those still queued in its mailbox.

Deviation, on purpose: an exit signal that kills a non-trapping actor still runs its `terminate`
(OTP skips it) so that resources such as worker processes are always released; only ``"kill"``
skips it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiotp.runtime import telemetry
from aiotp.runtime.errors import ActorExited, NoProc
from aiotp.runtime.messages import Down, Exit
from aiotp.runtime.ref import CALL, INFO, ActorRef, Caller, MonitorRef, Phase

if TYPE_CHECKING:
    from aiotp.runtime.runtime import Runtime

__all__ = ["Signals"]

_log = logging.getLogger("aiotp.actor")


class Signals:
    """The runtime's switchboard for links, monitors and exit signals (one per Runtime)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    # -- links -------------------------------------------------------------------------
    def link(self, a: ActorRef, b: ActorRef) -> None:
        if a is b:
            return
        if b._phase is Phase.DEAD:
            # OTP sends the linker an exit signal "noproc"; raising lets a non-trapping caller
            # die (or catch it), and a trapping caller gets the message it expects.
            if a._actor is not None and a._actor.trap_exit:
                a._put((INFO, Exit(b, "noproc")), force=True)
                return
            raise NoProc(f"cannot link to {b!r}: it is not alive")
        if a._links is None:
            a._links = set()
        if b._links is None:
            b._links = set()
        a._links.add(b)
        b._links.add(a)

    def unlink(self, a: ActorRef, b: ActorRef) -> None:
        if a._links is not None:
            a._links.discard(b)
        if b._links is not None:
            b._links.discard(a)

    # -- monitors ----------------------------------------------------------------------
    def monitor(self, watcher: ActorRef, target: ActorRef) -> MonitorRef:
        mref = MonitorRef(watcher, target)
        if target._phase is Phase.DEAD:
            watcher._put((INFO, Down(mref, target, "noproc")), force=True)
            return mref
        if target._monitored_by is None:
            target._monitored_by = {}
        if watcher._monitoring is None:
            watcher._monitoring = {}
        target._monitored_by[mref.id] = mref
        watcher._monitoring[mref.id] = mref
        return mref

    def demonitor(self, mref: MonitorRef) -> bool:
        found = False
        by = mref.target._monitored_by
        if by is not None and by.pop(mref.id, None) is not None:
            found = True
        mon = mref.watcher._monitoring
        if mon is not None:
            mon.pop(mref.id, None)
        return found

    # -- exit signals ------------------------------------------------------------------
    def exit(self, target: ActorRef, reason: Any, sender: ActorRef | None) -> None:
        """Deliver an exit signal, as `erlang:exit/2` does."""
        if target._phase is Phase.DEAD:
            return
        if reason == "kill":
            self._interrupt(target, "killed", run_terminate=False)
            return
        actor = target._actor
        if actor is not None and actor.trap_exit:
            target._put((INFO, Exit(sender, reason)), force=True)
            return
        if reason == "normal":
            return
        if target._phase is Phase.STOPPING:
            return  # already on its way out; only "kill" may cut terminate short
        self._interrupt(target, reason, run_terminate=True)

    def _interrupt(self, target: ActorRef, reason: Any, run_terminate: bool) -> None:
        if target._exit_signal is not None and reason != "killed":
            return
        target._exit_signal = (reason, run_terminate)
        task = target._task
        if task is not None and not task.done():
            task.cancel()

    # -- death ---------------------------------------------------------------------------
    def finish(self, ref: ActorRef, reason: Any, init_failed: bool = False) -> None:
        """Everything that happens once an actor is gone. Runs in its task, without awaiting."""
        actor = ref._actor
        if actor is not None:
            try:
                actor.on_exit(reason)
            except Exception:
                _log.exception("%r: on_exit(%r) raised", ref, reason)
        ref._phase = Phase.DEAD
        ref._reason = reason
        rt = self._rt
        rt._forget(ref)
        self._fail_callers(ref, reason)
        if ref._timers:
            for timer in list(ref._timers):
                timer.cancel()
            ref._timers = None
        if ref._monitoring:
            for mref in list(ref._monitoring.values()):
                self.demonitor(mref)
        signal_reason = "killed" if reason == "kill" else reason
        links, ref._links = ref._links, None
        if links:
            for other in links:
                if other._links is not None:
                    other._links.discard(ref)
                # A failed init is reported to the spawner by `spawn` raising, so no signal
                # travels back to it; actors linked *during* init hear of it as OTP's would,
                # or they would live on as orphans.
                if not init_failed or other is not ref._parent:
                    self.exit(other, signal_reason, ref)
        watchers, ref._monitored_by = ref._monitored_by, None
        if watchers:
            for mref in watchers.values():
                mon = mref.watcher._monitoring
                if mon is not None:
                    mon.pop(mref.id, None)
                mref.watcher._put((INFO, Down(mref, ref, signal_reason)), force=True)
        ref._actor = None
        telemetry.execute(
            ("aiotp", "actor", "exited"),
            {"count": 1},
            {"actor": ref, "name": ref.name, "reason": signal_reason},
        )

    def _fail_callers(self, ref: ActorRef, reason: Any) -> None:
        pending: list[Caller] = []
        if ref._current_caller is not None:
            pending.append(ref._current_caller)
            ref._current_caller = None
        batch = ref._batch
        leftovers = (batch[ref._pos :] if batch is not None else []) + ref._inbox
        ref._batch = None
        ref._inbox = []
        for item in leftovers:
            if item[0] == CALL:
                pending.append(item[2])
        if ref._deferred:
            pending.extend(ref._deferred)
        ref._deferred = None
        if not pending:
            return
        for caller in pending:
            caller.fail(ActorExited(reason, ref))
