"""Process titles: every worker reads ``aiotp: <pool> worker <i>`` in ps, the template
``aiotp: <pool> template``, also after a worker was SIGKILLed and replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import wait_until

import aiotp
from aiotp.workers.api import registry

ECHO = "pool_adapters:Echo"
ROOT = Path(__file__).resolve().parents[2]


def title(pid: int | None) -> str:
    """What ps shows as the process's command line (empty once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def workers(rt: aiotp.Runtime, pool: str) -> dict[int, Any]:
    """Index -> handle of the pool's live workers."""
    slots = registry(rt).pools[pool].dispatcher.slots
    return {s.index: s.handle for s in slots if not s.handle.closed.done()}


def titled(rt: aiotp.Runtime, pool: str, size: int) -> bool:
    live = workers(rt, pool)
    return len(live) == size and all(
        title(h.pid) == f"aiotp: {pool} worker {i}" for i, h in live.items()
    )


async def test_workers_and_template_are_titled_also_after_a_sigkill(rt: aiotp.Runtime) -> None:
    # Worker 0 starts afresh (python -S -P), 1 and 2 are forked from the template.
    await rt.start_pool("ml", ECHO, profile="process", size=3, heartbeat=None)
    # The title comes right after READY: wait for it rather than assume it.
    await wait_until(lambda: titled(rt, "ml", 3), 10)
    zygote = registry(rt).pools["ml"].zygote
    assert zygote is not None
    await wait_until(lambda: title(zygote.pid) == "aiotp: ml template", 10)

    for index in (0, 1):  # the fresh start's replacement is forked, the fork's too
        old = workers(rt, "ml")[index]
        os.kill(old.pid, signal.SIGKILL)
        await wait_until(
            lambda old=old, index=index: workers(rt, "ml").get(index) not in (None, old), 10
        )
        await wait_until(lambda: titled(rt, "ml", 3), 10)
    assert await rt.execute("ml", "echo", {"value": 1}) == 1


async def test_workers_started_afresh_are_titled(rt: aiotp.Runtime) -> None:
    await rt.start_pool("plain", ECHO, profile="process", size=2, preload=False, heartbeat=None)
    await wait_until(lambda: titled(rt, "plain", 2), 10)
    assert registry(rt).pools["plain"].zygote is None


def test_without_setproctitle_a_worker_keeps_its_command_line() -> None:
    """set_title is best effort: no setproctitle on the path is False, not an error."""
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}]; "
        "from aiotp.workers import proctitle; "
        "print(proctitle.set_title('aiotp: x worker 0'), 'setproctitle' in str(sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-P", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_setting_a_title_does_not_import_logging() -> None:
    """``import setproctitle`` imports logging (12 ms of a worker's start): we load only its
    C extension."""
    code = (
        "import sys; from aiotp.workers import proctitle; "
        "ok = proctitle.set_title('aiotp: x worker 0'); "
        "print(ok, 'logging' in sys.modules, open('/proc/self/cmdline', 'rb').read()[:17])"
    )
    path = os.pathsep.join([str(ROOT), *[p for p in sys.path if p.endswith("site-packages")]])
    code = f"import sys; sys.path[:0] = {path.split(os.pathsep)!r}; " + code
    out = subprocess.run(
        [sys.executable, "-S", "-P", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "b'aiotp:", "x", "worker", "0'"]
