"""The life of one actor: the coroutine its task runs, from `init` to its last breath.

Kept apart from `ActorRef` so that the hot loop is one flat coroutine: an idle actor is one task
suspended on one future, which is most of what it costs in memory.

Concurrency decisions:
- Messages are taken a batch at a time (the whole inbox list is swapped out) so a burst of casts
  wakes the actor once. Every 64 messages handled without suspending we yield to the loop: an
  actor flooded with cheap casts must not starve every other task.
- An exit signal that the actor does not trap cancels its task wherever it awaits; the runtime
  records the reason first (`_exit_signal`) so the CancelledError can be told apart from a
  cancellation of our own making. A handler that swallows the CancelledError is still stopped
  after it returns.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiotp.runtime.errors import ActorExited
from aiotp.runtime.messages import NOREPLY
from aiotp.runtime.ref import CALL, CAST, INFO, STOP, ActorRef, Caller, Phase, _current

if TYPE_CHECKING:
    from aiotp.runtime.actor import Actor

__all__ = ["actor_main"]

_log = logging.getLogger("aiotp.actor")
_YIELD_EVERY = 64


class _Stopped(Exception):
    """Internal: leaves the serve loop with a stop reason."""

    def __init__(self, reason: Any) -> None:
        self.reason = reason


async def actor_main(
    ref: ActorRef, args: tuple[Any, ...], kwargs: dict[str, Any], started: asyncio.Future[None]
) -> None:
    # One flat coroutine on purpose: every extra frame or local that lives while the actor idles
    # costs every idle actor (a nested serve coroutine alone was 320 bytes of our 2 KiB budget).
    _current.set(ref)
    actor = ref._actor
    assert actor is not None
    try:
        await actor.init(*args, **kwargs)
    except asyncio.CancelledError:
        killed_by, _ = ref._exit_signal or ("killed", False)
        _uncancel()
        if not started.done():
            started.set_exception(ActorExited(killed_by, ref))
        ref._rt._signals.finish(ref, killed_by, init_failed=True)
        return
    except BaseException as exc:
        if not started.done():
            started.set_exception(exc)
        ref._rt._signals.finish(ref, exc, init_failed=True)
        return
    del args, kwargs
    ref._phase = Phase.RUNNING
    if not started.done():
        started.set_result(None)
    del started
    reason: Any = "normal"
    run_terminate = True
    try:
        handled = 0
        while True:
            if ref._stop_reason is not None:
                raise _Stopped(ref._stop_reason)
            batch = ref._inbox
            if not batch:
                del batch
                waiter: asyncio.Future[None] = ref._loop.create_future()
                ref._waiter = waiter
                await waiter
                continue
            ref._inbox = []
            ref._batch = batch
            ref._pos = 0
            for item in batch:
                ref._pos += 1
                kind = item[0]
                if kind == CAST:
                    await actor.handle_cast(item[1])
                elif kind == CALL:
                    await _handle_call(ref, actor, item[1], item[2])
                elif kind == INFO:
                    await actor.handle_info(item[1])
                elif kind == STOP:
                    ref._stop_reason = item[1]
                if ref._exit_signal is not None:
                    # A signal arrived while a handler swallowed our cancellation.
                    raise asyncio.CancelledError
                if ref._stop_reason is not None:
                    raise _Stopped(ref._stop_reason)
                handled += 1
                if handled % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            ref._batch = None
    except _Stopped as stop:
        reason = stop.reason
    except asyncio.CancelledError:
        reason, run_terminate = ref._exit_signal or ("killed", False)
        _uncancel()
    except Exception as exc:
        reason = exc
        _log.error("%r crashed", ref, exc_info=exc)
    if run_terminate:
        reason = await _terminate(ref, actor, reason)
    ref._rt._signals.finish(ref, reason)


async def _handle_call(ref: ActorRef, actor: Actor, msg: Any, caller: Caller) -> None:
    ref._current_caller = caller
    try:
        result = await actor.handle_call(msg, caller)
    except Exception as exc:
        ref._current_caller = None
        caller.fail(exc)
        raise
    # On an exit signal (CancelledError) the caller stays recorded: `Signals.finish` fails it
    # with `ActorExited` at once. Clearing it in a `finally` is what once left such callers
    # waiting for their whole timeout.
    ref._current_caller = None
    if result is not NOREPLY:
        caller.reply(result)
    elif not caller.done:
        if ref._deferred is None:
            ref._deferred = set()
        ref._deferred.add(caller)


async def _terminate(ref: ActorRef, actor: Actor, reason: Any) -> Any:
    ref._phase = Phase.STOPPING
    try:
        await actor.terminate(reason)
    except asyncio.CancelledError:
        # Only a "kill" cancels a stopping actor: it did not finish terminate.
        _uncancel()
        return "killed"
    except Exception:
        _log.exception("%r: terminate(%r) raised", ref, reason)
    return reason


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        while task.cancelling():
            task.uncancel()
