"""The HTTP endpoint of the metrics exporter: one thread serving ``GET /metrics``.

Why our own server rather than `prometheus_client.start_http_server`: that one cannot be
stopped cleanly (its thread serves forever, a thread per request, all daemons) and binds to
0.0.0.0 by default. This one binds to 127.0.0.1 unless told otherwise, serves requests one at
a time on one thread (a scrape every few seconds needs no more; a client that stalls is cut off
after ``REQUEST_TIMEOUT`` s), and `MetricsServer.close` stops and joins that thread.

Bad input fails at once with a typed error: `MetricsServerError` (an `OSError` too) for a port in
use or a host that does not resolve or cannot be bound, `ValueError`/`TypeError` for a port
that is not an int in 0..65535 or a host that is not a non-empty string.
"""

from __future__ import annotations

import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from aiotp.errors import AiotpError

__all__ = ["REQUEST_TIMEOUT", "MetricsServer", "MetricsServerError"]

#: Seconds a client may take to send its request or read the answer.
REQUEST_TIMEOUT = 10.0


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

    def __init__(self, registry: CollectorRegistry, port: int = 0, host: str = "127.0.0.1") -> None:
        _check(host, port)
        family = _family(host, port)
        server_class = type("_Server", (_Server,), {"address_family": family})
        try:
            self._httpd: WSGIServer = make_server(
                host, port, make_wsgi_app(registry), server_class, handler_class=_Quiet
            )
        except OSError as exc:
            raise MetricsServerError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", host, port
            ) from exc
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},  # how long close() may wait for the loop to notice
            name=f"aiotp metrics :{self.port}",
            daemon=True,  # never keeps a process alive that forgot close()
        )
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def close(self) -> None:
        """Stop serving, close the socket and join the thread (idempotent). A request being
        answered is finished first (bounded by `REQUEST_TIMEOUT`)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()


class _Server(WSGIServer):
    """Serves one request at a time on the serving thread."""


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
