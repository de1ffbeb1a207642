"""The worker side of a process worker: ``python -m aiotp.workers.host`` (or forked by the zygote).

It loads the adapter, runs ``setup()``, sends READY (or FAILED and exits 1), then serves frames
from its socket until STOP (teardown, exit 0) or EOF (the parent is gone: exit at once).

Execution lane: with ``threads == 1`` (the default) requests run inline on the reading thread
and their replies are batched into one write per read: the cheapest path there is. With more
threads they run on a pool of that many threads. PINGs travel the same lane, behind the tools
that are running, so a worker whose every thread is stuck (in a tool that sleeps forever or holds
the GIL) stops answering pings and the heartbeat replaces it.

It dies with its parent: EOF on its socket, and on Linux the parent-death signal (SIGKILL), so
that no worker survives a SIGKILLed runtime even while it is busy in a long tool.

Its start path touches only C modules (``_socket``, ``_signal``, ``_thread``, ``_ctypes``):
``socket``, ``signal``, ``threading`` and ``contextlib`` pull in enum, selectors and functools
(7 ms of a worker's start), ``ctypes`` its package (1.4 ms more). The full modules come only
with what needs them (a thread pool, asyncio for async tools).
"""

from __future__ import annotations

import _socket
import _thread
import os
import sys

from aiotp.workers import host_stream
from aiotp.workers import protocol as p
from aiotp.workers.adapter import load_adapter
from aiotp.workers.invoke import Toolbox, describe_failure

# asyncio and concurrent.futures are imported only when an adapter needs them (async tools,
# threads_per_worker > 1): together they are 30 ms of a worker's start, which is most of it.
# Nor is typing (~5 ms) or traceback (only once setup failed).
# contextlib neither (functools with it): hence try/except/pass rather than suppress().
TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    import signal as _signal  # the C module has no stubs; its constants are signal's
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any
else:
    import _signal

__all__ = ["current_socket", "die_with_parent", "serve"]

#: The socket this worker serves on (set once serving). For tests that must misbehave on the
#: wire; adapters have no business touching it.
current_socket: _socket.socket | None = None


def die_with_parent(expected_parent: int | None) -> None:
    """Ask Linux to SIGKILL us when our parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        try:  # noqa: SIM105
            _prctl_set_pdeathsig(_signal.SIGKILL)
        except Exception:  # no prctl: EOF on the socket still ends us
            pass
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(0)  # the parent died before prctl took effect


def _prctl_set_pdeathsig(signum: int) -> None:
    """``ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)``, built
    the way ctypes builds it (a CFuncPtr class with CDLL's flags and c_int result) from
    ``_ctypes`` alone: importing the ctypes package costs 1.4 ms of a worker's start."""
    import _ctypes

    class CInt(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_int
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):  # CDLL._FuncPtr
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = CInt

    libc = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]  # the process
    pr_set_pdeathsig = 1
    Function(_ctypes.dlsym(libc, "prctl"))(pr_set_pdeathsig, signum, 0, 0, 0)


def die_with_runtime(runtime_pidfd: int) -> None:
    """Watch the runtime process (a pidfd) and take our whole process group down when it dies.

    Workers forked by the template are the template's children, so the parent-death signal
    would tie them to the template rather than to the runtime. A daemon thread blocked on the
    runtime's pidfd costs no CPU and works even while every other thread is stuck in a tool.
    """
    import select

    def watch() -> None:
        try:  # noqa: SIM105
            select.select([runtime_pidfd], [], [])
        except OSError:
            pass
        exit_with_group(0)

    # A bare thread (what a daemon threading.Thread is underneath): threading is not imported.
    _thread.start_new_thread(watch, ())


def exit_with_group(code: int) -> None:
    """Leave, taking the processes our tools started with us (we lead our process group)."""
    if os.getpgrp() == os.getpid():
        try:  # noqa: SIM105
            os.killpg(os.getpid(), _signal.SIGKILL)  # the group, ourselves included
        except OSError:
            pass
    os._exit(code)


class _Host:
    def __init__(self, sock: _socket.socket, box: Toolbox, threads: int, max_frame: int) -> None:
        self.sock = sock
        self.box = box
        self.threads = threads
        self.max_frame = max_frame
        self.cancelled: set[int] = set()
        self.write_lock = _thread.allocate_lock()
        self.reader = p.FrameReader(max_frame)
        self.backlog: list[list[Any]] = []
        self.pool: ThreadPoolExecutor | None = None
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(threads)
        self._loops = _thread._local()
        self.streams = host_stream.Streams()  # credit gates of threaded streams
        # Async tools running now, by request id: a CANCEL frame cancels them.
        self.async_tools: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = {}

    # -- output ---------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        with self.write_lock:
            self.sock.sendall(data)

    def encode(self, frame: list[Any]) -> bytes:
        try:
            return p.pack(frame, self.max_frame)  # max_frame: the parent refuses more anyway
        except Exception as exc:  # a result msgpack cannot carry: tell the caller why
            return p.pack(
                [p.ERROR, frame[1], "tool_error", "SerializationError", f"result: {exc}", ""]
            )

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                exit_with_group(0)  # EOF: the parent is gone; nobody to answer
            out: list[bytes] = []
            for frame in self.reader.feed(data):
                self.handle(frame, out)
            while self.backlog:  # frames that arrived while an inline stream ran
                self.handle(self.backlog.pop(0), out)
            if out:
                self.send(b"".join(out))

    def handle(self, frame: list[Any], out: list[bytes]) -> None:
        kind = frame[0]
        if kind == p.REQUEST:
            if self.pool is None:
                self.run_request(frame, out)
            else:
                self.pool.submit(self._threaded_request, frame)
        elif kind == p.PING:
            if self.pool is None:
                out.append(p.pack([p.PONG, frame[1]]))
            elif self.streams.waiting >= self.threads:
                self.send(p.pack([p.PONG, frame[1]]))  # every thread waits on a slow consumer
            else:
                self.pool.submit(self.send, p.pack([p.PONG, frame[1]]))
        elif kind == p.CANCEL:
            self.cancel(frame[1])
        elif kind == p.CREDIT:
            self.streams.credit(frame[1], frame[2])
        elif kind == p.DROP:
            self.box.sessions.drop(frame[2])
        elif kind == p.STOP:
            self.stop(out)

    def stop(self, out: list[bytes]) -> None:
        if out:
            self.send(b"".join(out))
            out.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        try:  # noqa: SIM105
            self.box.adapter.teardown()
        except Exception:
            pass
        try:  # noqa: SIM105
            self.sock.shutdown(_socket.SHUT_WR)
        except OSError:
            pass
        os._exit(0)

    def cancel(self, rid: int) -> None:
        """The caller left: skip the request if it has not started, cancel it if it is an
        async tool. A sync tool that is running cannot be interrupted; it finishes, and the
        pool decides (after its ``cancel_grace``) whether to wait for it or recycle us."""
        self.cancelled.add(rid)
        running = self.async_tools.get(rid)
        if running is not None:
            loop, task = running
            if loop.is_running():
                loop.call_soon_threadsafe(task.cancel)
            else:
                task.cancel()

    def _threaded_request(self, frame: list[Any]) -> None:
        out: list[bytes] = []
        if frame[1] in self.cancelled:  # its caller left while it waited for a thread
            self.cancelled.discard(frame[1])
            self.send(_cancelled_frame(frame[1]))
            return
        self.run_request(frame, out)
        if out:
            self.send(b"".join(out))

    # -- running tools ----------------------------------------------------------------------
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._loops, "loop", None)
        if loop is None:
            import asyncio

            loop = asyncio.new_event_loop()
            self._loops.loop = loop
        return loop

    def run_request(self, frame: list[Any], out: list[bytes]) -> None:
        rid = frame[1]
        try:
            fn, kind = self.box.lookup(frame[2])
            args = frame[3]
            if len(frame) > 5 or frame[2] in self.box.sessioned:
                args = self.box.bind(frame[2], args, frame[4:6] if len(frame) > 5 else None)
            if kind == "sync":  # the common case first, with the fewest steps
                out.append(self.encode([p.REPLY, rid, fn(**args)]))
                return
            if kind in ("gen", "agen"):
                self.run_stream(rid, fn, kind, args, out)
                return
            result = self._run_async(rid, fn, args)
            out.append(self.encode([p.REPLY, rid, result]))
        except BaseException as exc:  # a tool's KeyboardInterrupt and SystemExit too
            f = describe_failure(exc)
            out.append(p.pack([p.ERROR, rid, f.kind, f.type_name, f.message, f.tb]))

    def _run_async(self, rid: int, fn: Any, args: dict[str, Any]) -> Any:
        """Run an async tool to completion on this thread's loop, cancellable by CANCEL.

        On the inline lane (one thread) nobody else reads the socket while the tool runs, so
        the loop watches it: CANCEL cancels the tool, PING is answered, anything else waits in
        the backlog. With a thread pool the reading thread routes CANCEL here itself.
        """
        loop = self._loop()
        task = loop.create_task(fn(**args))
        self.async_tools[rid] = (loop, task)
        watching = self.pool is None
        if watching:
            loop.add_reader(self.sock.fileno(), self._read_while_async)
        try:
            return loop.run_until_complete(task)
        finally:
            if watching:
                loop.remove_reader(self.sock.fileno())
            del self.async_tools[rid]
            self.cancelled.discard(rid)

    def _read_while_async(self) -> None:
        try:
            data = self.sock.recv(1 << 16, _socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            exit_with_group(0)  # the parent is gone
        for frame in self.reader.feed(data):
            if frame[0] == p.CANCEL:
                self.cancel(frame[1])
            elif frame[0] == p.PING:
                self.send(p.pack([p.PONG, frame[1]]))
            else:
                self.backlog.append(frame)

    def run_stream(
        self, rid: int, fn: Any, kind: str, args: dict[str, Any], out: list[bytes]
    ) -> None:
        """A generator tool: items within the caller's credit window (host_stream.py)."""
        if out:  # earlier replies go first
            self.send(b"".join(out))
            out.clear()
        host_stream.run_stream(self, rid, fn, kind, args)

def _cancelled_frame(rid: int) -> bytes:
    return p.pack([p.ERROR, rid, "cancelled", "Cancelled", "the caller left", ""])


def serve(
    sock: _socket.socket,
    adapter: str,
    threads: int,
    max_frame: int,
    worker_id: str,
    title: str | None = None,
) -> None:
    """Load, set up, announce, take `title` (see proctitle.py), serve. Never returns."""
    try:
        cls = load_adapter(adapter)
        box = Toolbox(cls)
        box.adapter.setup()
    except BaseException as exc:
        import traceback

        tb = traceback.format_exc()
        try:
            sock.sendall(p.pack([p.FAILED, 0, type(exc).__name__, str(exc), tb]))
        except Exception:
            # Only when the runtime cannot hear it: the FAILED frame carries the traceback to
            # the pool, which logs it once for all its workers (a copy on stderr from each
            # worker would print it once per worker, outside of logging).
            sys.stderr.write(f"aiotp worker {worker_id}: {adapter} failed to start\n{tb}")
            sys.stderr.flush()
        os._exit(1)
    # A non-thread-safe adapter is never entered twice at once, whatever the thread count.
    threads = threads if cls.thread_safe else 1
    global current_socket
    current_socket = sock
    sock.sendall(p.pack([p.READY, 0, os.getpid(), box.names, threads, sorted(box.idempotent)]))
    if title:  # after READY: the title costs the start nothing (its import is ~0.5 ms)
        from aiotp.workers import proctitle

        proctitle.set_title(title)
    host = _Host(sock, box, threads, max_frame)
    host.run()


def main() -> None:
    env = os.environ
    die_with_parent(int(env["AIOTP_PARENT_PID"]) if "AIOTP_PARENT_PID" in env else None)
    sock = _socket.socket(fileno=int(env["AIOTP_WORKER_FD"]))
    serve(
        sock,
        env["AIOTP_ADAPTER"],
        int(env.get("AIOTP_THREADS", "1")),
        int(env.get("AIOTP_MAX_FRAME", str(p.DEFAULT_MAX_FRAME))),
        env.get("AIOTP_WORKER_ID", "?"),
        env.get("AIOTP_TITLE"),
    )


if __name__ == "__main__":
    main()
