"""What a pool logs, and under which logger: one logger per pool, one line per worker death.

The problem: an operator running several pools wants to raise one pool to DEBUG or silence a
noisy one without touching the others, and to read a worker's death as one line that says
which worker, which process and how it ended, not a traceback per worker per restart.

- `pool_logger`: every record about one pool goes to ``aiotp.pool.<name>`` (``aiotp.pool.ml``),
  a child of ``aiotp.pool``: ``logging.getLogger("aiotp.pool.ml").setLevel(logging.ERROR)``
  quiets that pool alone, ``aiotp.pool`` all of them. (A pool named ``a.b`` logs to
  ``aiotp.pool.a.b``, under ``aiotp.pool.a``, as logging's dotted names go.)
- `describe_exit`: how a worker process ended, from its exit code: ``was killed by SIGKILL``,
  ``exited with code 3``.
- `log_worker_death`: the one WARNING line of a worker that died on its own (the pool replaces
  it), naming the pool, the worker's index, id and pid, and how it ended; what the process
  wrote to stderr last (a traceback, if it died of one) follows at DEBUG only.
- `StartFailures`: a worker that fails to start (the adapter's ``setup()`` raised, say) is one
  ERROR record with the worker's own traceback of it, per pool and kind of failure (the type
  ``setup()`` raised), however many workers and restart attempts fail the same way; the
  repeats are DEBUG lines. Once a worker starts again, the next failure is reported afresh.

An expected death (SIGKILL, the OOM killer, an exit, a heartbeat kill) is never an ERROR
record: the pool is built to survive it.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from aiotp.runtime import reports

__all__ = ["StartFailures", "describe_exit", "log_worker_death", "pool_logger"]

#: How long a dead worker's actor waits for the exit code before logging without it: the code
#: comes with the process's end (or, for a forked worker, a few ms later from the template).
EXIT_CODE_WAIT = 1.0
STDERR_AT_DEBUG = 4000  # characters of the dead worker's stderr tail logged at DEBUG


def pool_logger(pool: str) -> logging.Logger:
    """The logger of pool `pool`: ``aiotp.pool.<pool>``."""
    return logging.getLogger(f"aiotp.pool.{pool}")


def describe_exit(code: int | None) -> str:
    """``was killed by SIGKILL`` / ``exited with code 3`` from a `Popen.returncode`-style code."""
    if code is None:
        return "exited (how is unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


async def log_worker_death(pool: str, index: int, handle: Any, reason: Any) -> None:
    """Log the death of `handle` (a worker that ended on its own) as one WARNING line."""
    log = pool_logger(pool)
    how = f"died ({reason})"
    exit_code = getattr(handle, "exit_code", None)  # process workers only
    if isinstance(reason, str) and reason.startswith("protocol error"):
        how = f"broke the wire protocol ({reason.removeprefix('protocol error: ')}) and was killed"
    elif exit_code is not None:
        how = describe_exit(await exit_code(EXIT_CODE_WAIT))
    log.warning(
        "pool %r: worker %d (%s, pid %s) %s; replacing it",
        pool,
        index,
        handle.worker_id,
        handle.pid,
        how,
    )
    tail = handle.stderr_tail().strip() if hasattr(handle, "stderr_tail") else ""
    if tail and log.isEnabledFor(logging.DEBUG):
        log.debug(
            "pool %r: worker %d (%s) wrote last to stderr:\n%s",
            pool,
            index,
            handle.worker_id,
            tail[-STDERR_AT_DEBUG:],
        )


class StartFailures:
    """One ERROR record per kind of start failure of one pool (see the module docstring)."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._reported: set[str] = set()

    def started(self) -> None:
        """A worker started: the next failure is news again."""
        self._reported.clear()

    def failed(self, index: int, exc: BaseException) -> None:
        """Worker `index` failed to start with `exc` (raised on to the caller afterwards)."""
        log = pool_logger(self.pool)
        summary = str(exc).split("\n", 1)[0]
        key = _kind(exc, summary)
        if key in self._reported:
            log.debug("pool %r: worker %d failed to start too: %s", self.pool, index, summary)
        else:
            self._reported.add(key)
            log.error(
                "pool %r: worker %d failed to start: %s",
                self.pool,
                index,
                summary,
                exc_info=_with_remote_traceback(exc),
            )
        reports.mark_reported(exc)  # the supervisors above need not log it again


def _kind(exc: BaseException, summary: str) -> str:
    """What makes two start failures "the same": the type of what the worker's setup raised
    (its message may hold a counter, an address or a time), else the message without the
    worker's id (a timeout, a worker that exited before READY)."""
    remote = (getattr(exc, "stderr", "") or "").rstrip()
    if "Traceback" in remote:
        last = remote.rsplit("\n", 1)[-1]
        return f"setup raised {last.split(':', 1)[0]}"
    worker_id = getattr(exc, "worker_id", None)
    return f"{type(exc).__name__}: {summary.replace(worker_id, '') if worker_id else summary}"


def _with_remote_traceback(exc: BaseException) -> Any:
    """What the record's traceback shows: the worker's own traceback of its setup (as a note,
    without the runtime-side frames, which only say that a start failed), else `exc`'s."""
    remote = getattr(exc, "stderr", "") or ""
    if "Traceback" not in remote:
        return exc
    note = f"--- worker traceback ---\n{remote.rstrip()}"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    return (type(exc), exc, None)
