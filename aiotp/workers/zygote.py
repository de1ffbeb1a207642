"""The zygote: a template process that forks ready-to-serve workers in about a millisecond.

Starting a worker as ``python -m aiotp.workers.host`` costs the interpreter start plus imports
(~50 ms here). Instead, each pool starts one zygote that imports the adapter's module (and the
host) once, then forks a worker per request, as multiprocessing's forkserver does: a fork of a
warm, single-threaded process is ready after the adapter's ``setup()``.

Protocol on the control socketpair: the parent sends a small msgpack request (worker id,
threads, max frame, process title) with two file descriptors attached (the worker's socket and
stderr pipe, via SCM_RIGHTS); the zygote forks and answers with the worker's pid as 4 bytes.
The zygote never runs adapter code itself beyond the module import (``setup()`` runs in each
worker), stays single-threaded so forking is safe, reaps its children and reports how each
ended (pid and exit code, 8 bytes, on the ``AIOTP_ZYGOTE_EXITS`` pipe; without that pipe it
lets the kernel reap them), takes its title once ready (``AIOTP_TITLE``, see proctitle.py),
and dies with the runtime (EOF on the control
socket, and the parent-death signal). Its workers do *not* die with it: each watches the runtime
process itself (a pidfd the zygote opened and every fork inherits), so SIGKILL of the template
kills no worker and fails no call; the pool starts a new template when it next needs one.

If the zygote cannot start (the adapter's module does not import, say), the pool falls back to
plain starts, which then report the failure with the worker's stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import struct

import msgpack

__all__ = ["main"]

_PID = struct.Struct(">i")
_EXIT = struct.Struct(">ii")  # a child's pid and exit code, on the exits pipe


def main() -> None:
    from aiotp.workers import host

    env = os.environ
    parent = int(env["AIOTP_PARENT_PID"])
    host.die_with_parent(parent)
    # Opened while the runtime is surely alive (we die with it) and inherited by every worker
    # we fork: they watch the runtime itself, not us, so losing the template kills no worker.
    runtime_fd = os.pidfd_open(parent)
    ctrl = socket.socket(fileno=int(env["AIOTP_ZYGOTE_FD"]))
    adapter = env["AIOTP_ADAPTER"]
    try:
        module = adapter.partition(":")[0]
        importlib.import_module(module)  # the expensive part, paid once
        from aiotp.workers.adapter import load_adapter

        load_adapter(adapter)
    except BaseException as exc:
        ctrl.sendall(b"F" + f"{type(exc).__name__}: {exc}".encode()[:4000])
        os._exit(1)
    exits = int(env["AIOTP_ZYGOTE_EXITS"]) if "AIOTP_ZYGOTE_EXITS" in env else None
    if exits is None:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our children
    else:
        _report_exits(exits)
    ctrl.sendall(b"R")
    # Once ready (the title is no part of the start); our forks inherit the loaded module.
    from aiotp.workers import proctitle

    proctitle.set_title(env.get("AIOTP_TITLE"))
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctrl, 4096, 2)
        except OSError:
            os._exit(0)
        if not msg:
            os._exit(0)  # the runtime is gone
        worker_id, threads, max_frame, *more = msgpack.unpackb(msg)
        title = more[0] if more else None
        worker_fd, err_fd = fds
        pid = os.fork()
        if pid == 0:
            try:
                ctrl.close()
                if exits is not None:
                    os.close(exits)
                os.setsid()  # own process group: a stop signals the worker and its children
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                host.die_with_runtime(runtime_fd)
                os.dup2(err_fd, 2)
                os.close(err_fd)
                sock = socket.socket(fileno=worker_fd)
                host.serve(sock, adapter, threads, max_frame, worker_id, title)
            finally:
                os._exit(1)
        os.close(worker_fd)
        os.close(err_fd)
        with contextlib.suppress(OSError):
            ctrl.sendall(_PID.pack(pid))


def _report_exits(exits: int) -> None:
    """Reap our children ourselves and write each one's (pid, exit code) to `exits`.

    The runtime sees a forked worker end through a pidfd, but only a parent learns how a
    process ended, and we are the parent: without this, the runtime could not say whether a
    worker was SIGKILLed (the OOM killer) or exited with code 3. The code is
    `os.waitstatus_to_exitcode`'s (negative: killed by that signal). The pipe does not block
    us: a runtime that does not read (it is gone) loses the reports, and says "unknown".
    """
    os.set_blocking(exits, False)

    def reap(_signum: int, _frame: object) -> None:
        # Runs in our only thread, between two bytecodes of the fork loop (PEP 475 retries
        # the recv it interrupted); several exits may share one SIGCHLD.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            with contextlib.suppress(OSError):
                os.write(exits, _EXIT.pack(pid, os.waitstatus_to_exitcode(status)))

    signal.signal(signal.SIGCHLD, reap)


if __name__ == "__main__":
    main()
