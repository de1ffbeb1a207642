"""The HTTP endpoint of the metrics exporter: ``GET /metrics`` on a thread of its own.

Why our own server rather than `prometheus_client.start_http_server`: that one cannot be
stopped cleanly (its thread serves forever, a thread per request, all daemons) and binds to
0.0.0.0 by default. This one binds to 127.0.0.1 unless told otherwise and `MetricsServer.close`
stops it within a bound, whatever its clients do.

Why a thread per request, and a deadline: one accepting thread answering requests one at a time
lets a single slow client (a request line, then a byte every few seconds, each under a per-read
timeout) hold every other scrape, and hold `close` with it. So each request is served on a
daemon thread of its own, at most `MAX_REQUESTS` at once (past that a connection gets a 503 at
once and is closed), and a request still open `deadline` seconds after it was accepted (default
`REQUEST_DEADLINE`: enough for a scrape that waits `scrape_timeout` for a blocked loop) has its
socket shut down. `close` stops accepting, shuts down the sockets of the requests in progress
(their threads then end at once) and waits for those threads at most `CLOSE_JOIN` seconds: it
may run on the runtime's loop (the runner calls it there), so it must not wait for a client.

Bad input fails at once with a typed error: `MetricsServerError` (an `OSError` too) for a port in
use or a host that does not resolve or cannot be bound, `ValueError`/`TypeError` for a port
that is not an int in 0..65535 or a host that is not a non-empty string.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from aiotp.errors import AiotpError

__all__ = [
    "CLOSE_JOIN",
    "MAX_REQUESTS",
    "REQUEST_DEADLINE",
    "REQUEST_TIMEOUT",
    "MetricsServer",
    "MetricsServerError",
]

#: Seconds one read or write of a request may take.
REQUEST_TIMEOUT = 10.0
#: Seconds a whole request may take, from accept to the last byte of the answer.
REQUEST_DEADLINE = 15.0
#: Requests served at once; one more gets a 503 without a thread.
MAX_REQUESTS = 16
#: Seconds `MetricsServer.close` waits for the request threads once their sockets are shut.
CLOSE_JOIN = 1.0
_POLL = 0.1  # how often the accepting thread checks deadlines and a close

_log = logging.getLogger("aiotp.metrics")
_BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class MetricsServerError(AiotpError, OSError):
    """The metrics endpoint could not be served on the host and port asked for (in use, not
    resolvable, not bindable). Nothing was left running; `.host` and `.port` name what was
    asked, ``__cause__`` is the OS error."""

    def __init__(self, message: str, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class MetricsServer:
    """Serves `registry` at http://host:port/metrics until `close`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        deadline: float = REQUEST_DEADLINE,
    ) -> None:
        _check(host, port)
        if not (isinstance(deadline, int | float) and deadline > 0):
            raise ValueError(f"deadline must be a positive number of seconds, got {deadline!r}")
        family = _family(host, port)
        server_class = type("_Server", (_Server,), {"address_family": family})
        try:
            httpd: WSGIServer = make_server(
                host, port, make_wsgi_app(registry), server_class, _Quiet
            )
        except OSError as exc:
            raise MetricsServerError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", host, port
            ) from exc
        assert isinstance(httpd, _Server)
        httpd.deadline = float(deadline)
        self._httpd = httpd
        self.host = host
        self.port: int = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": _POLL},
            name=f"aiotp metrics :{self.port}",
            daemon=True,  # never keeps a process alive that forgot close()
        )
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The accepting thread."""
        return self._thread

    @property
    def requests_in_progress(self) -> int:
        return len(self._httpd.active)

    def close(self) -> None:
        """Stop accepting, cut the requests in progress, close the socket (idempotent).

        Bounded: about `_POLL` for the accepting thread plus at most `CLOSE_JOIN` for the
        request threads, whatever the clients do."""
        httpd = self._httpd
        httpd.closing = True
        if self._thread.is_alive():
            httpd.shutdown()  # the accepting loop notices within _POLL
            self._thread.join()
        threads = httpd.cut_all()
        end = time.monotonic() + CLOSE_JOIN
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        httpd.server_close()


class _Server(WSGIServer):
    """Each request on a daemon thread of its own (at most MAX_REQUESTS), each under a deadline
    that the accepting thread enforces between two polls (`service_actions`)."""

    deadline = REQUEST_DEADLINE

    def server_activate(self) -> None:
        # Set here, not in __init__: make_server's constructor binds and activates.
        self.active: dict[socket.socket, tuple[float, threading.Thread]] = {}
        self.lock = threading.Lock()
        self.closing = False
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            refuse = self.closing or len(self.active) >= MAX_REQUESTS
            if not refuse:
                thread = threading.Thread(
                    target=self._serve_one,
                    args=(request, client_address),
                    name="aiotp metrics request",
                    daemon=True,
                )
                self.active[request] = (time.monotonic() + self.deadline, thread)
        if refuse:
            with contextlib.suppress(OSError):
                request.setblocking(False)  # 80 bytes fit in any socket buffer; never wait
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        thread.start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self.lock:
                self.active.pop(request, None)
            self.shutdown_request(request)

    def service_actions(self) -> None:
        """Between two polls of the accepting thread: cut the requests past their deadline."""
        now = time.monotonic()
        with self.lock:
            late = [sock for sock, (deadline, _) in self.active.items() if deadline <= now]
        for sock in late:
            _cut(sock)

    def cut_all(self) -> list[threading.Thread]:
        """Shut down every request's socket (its thread then ends); the threads to join."""
        with self.lock:
            active = list(self.active.items())
        for sock, _ in active:
            _cut(sock)
        return [thread for _, (_, thread) in active]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that left or was cut off is its own business: not a traceback on stderr.
        _log.debug("metrics: request from %s failed", client_address, exc_info=True)


def _cut(sock: socket.socket) -> None:
    """Wake whatever blocks on `sock` (a read returns EOF, a write fails); idempotent."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Quiet(WSGIRequestHandler):
    """No access log on stderr; a client that stalls is cut off."""

    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _check(host: Any, port: Any) -> None:
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"metrics port must be an int, got {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics port must be in 0..65535 (0 picks a free one), got {port}")
    if not isinstance(host, str) or not host:
        raise TypeError(f"metrics host must be a non-empty string, got {host!r}")


def _family(host: str, port: int) -> socket.AddressFamily:
    """The address family `host` resolves to (IPv4 or IPv6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise MetricsServerError(
            f"cannot serve metrics on {host}:{port}: the host does not resolve ({exc})", host, port
        ) from exc
    return infos[0][0]
