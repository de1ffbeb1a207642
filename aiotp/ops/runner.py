"""``aiotp run module:app``: start an `Application`, keep it up, stop it gracefully on a signal.

What an operator can rely on:
- The first SIGTERM or SIGINT stops the application in reverse start order within its
  ``shutdown_timeout``; the process then exits 0. A second signal during that stop exits at once
  (128 + the signal's number); worker processes die with their runtime.
- When the application ends on its own (its root supervisor exceeded its restart intensity: a
  failure nothing below could absorb), the runner logs it at ERROR and exits 1, so that the
  service manager restarts the whole unit, as an OTP node stops when a permanent application
  dies.
- A bad ``module:app`` (missing module, missing attribute, not an Application) is one line on
  stderr and exit status 2, before anything starts; an application that fails to start exits 1.
- The control socket and the metrics endpoint live exactly as long as the application.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import math
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiotp.ops.application import Application, ApplicationStartError
from aiotp.ops.log_format import configure_logging
from aiotp.runtime import Runtime
from aiotp.runtime.cancel import retrieve
from aiotp.runtime.loop import loop_factory
from aiotp.runtime.stop_signals import StopSignals

__all__ = ["AppLoadError", "load_application", "run_application", "run_command"]

_log = logging.getLogger("aiotp.application")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class AppLoadError(Exception):
    """``module:attribute`` does not name an `aiotp.Application`."""


def load_application(target: str) -> Application:
    """The `Application` named by ``"module:attribute"``, or returned by a plain function of no
    arguments named so (a factory). Anything else, or any failure while importing the module or
    calling the factory, is an `AppLoadError` naming the target and the cause."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise AppLoadError(f"expected module:attribute (e.g. myapp.main:app), got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the app is usually right here
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:  # SyntaxError, or the module raised while it was imported
        raise AppLoadError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AppLoadError(f"{module_name!r} has no attribute {attribute!r}") from None
    if inspect.isfunction(value):
        if inspect.iscoroutinefunction(value):
            raise AppLoadError(f"{target!r} is an async function; give a plain factory")
        try:
            value = value()
        except Exception as exc:
            raise AppLoadError(
                f"calling the factory {target!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
    if not isinstance(value, Application):
        what = f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__
        raise AppLoadError(f"{target!r} is {what}, not an aiotp.Application")
    return value


def run_command(args: argparse.Namespace) -> int:
    """The ``run`` subcommand of `aiotp.ops.cli`."""
    try:
        configure_logging(args.log_level, args.log_format)
        app = load_application(args.app)
    except (AppLoadError, ValueError) as exc:
        print(f"aiotp run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.shutdown_timeout is not None:
        if not math.isfinite(args.shutdown_timeout) or args.shutdown_timeout <= 0:
            print("aiotp run: --shutdown-timeout must be positive", file=sys.stderr)
            return EXIT_USAGE
        app.shutdown_timeout = float(args.shutdown_timeout)
    return run_application(app, control_socket=args.control_socket, metrics_port=args.metrics_port)


def run_application(
    app: Application,
    *,
    control_socket: str | None = None,
    metrics_port: int | None = None,
    uvloop: bool | None = None,
) -> int:
    """Run `app` on a new loop until a stop signal or its own end; return the exit status."""
    with asyncio.Runner(loop_factory=loop_factory(uvloop)) as runner:
        return runner.run(_serve(app, control_socket, metrics_port))


async def _serve(app: Application, control_socket: str | None, metrics_port: int | None) -> int:
    loop = asyncio.get_running_loop()
    stop_asked = asyncio.Event()
    signals = StopSignals(loop, lambda _signum: stop_asked.set())
    closers: list[Callable[[], Awaitable[None]]] = []
    try:
        starting = asyncio.ensure_future(app.start())
        asked = asyncio.ensure_future(stop_asked.wait())
        await asyncio.wait({starting, asked}, return_when=asyncio.FIRST_COMPLETED)
        asked.cancel()
        if not starting.done():
            # A signal during start-up: the start is cancelled and undoes itself.
            _log.info(
                "application %r: signal %s during start-up, stopping", app.name, signals.received
            )
            await app.stop()
            await asyncio.wait({starting})
            starting.add_done_callback(retrieve)
            return EXIT_OK
        try:
            rt = starting.result()
        except ApplicationStartError as exc:
            _log.error("%s", exc, exc_info=exc.__cause__)
            return EXIT_FAILED
        try:
            try:
                await _open_endpoints(rt, control_socket, metrics_port, closers)
            except Exception as exc:
                print(f"aiotp run: {exc}", file=sys.stderr)
                return EXIT_USAGE
            _log.info("application %r running (pid %d)", app.name, os.getpid())
            return await _until_stop(app, stop_asked, signals)
        finally:
            for close in reversed(closers):
                try:
                    await close()
                except Exception:
                    _log.warning("closing %r failed", close, exc_info=True)
            await app.stop()
    finally:
        signals.remove()


async def _open_endpoints(
    rt: Runtime,
    control_socket: str | None,
    metrics_port: int | None,
    closers: list[Callable[[], Awaitable[None]]],
) -> None:
    """The control socket and the metrics endpoint; a failure (path in use, port taken) is
    the operator's to fix: one line, exit 2, the application stopped."""
    if control_socket is not None:
        from aiotp.ops.control import serve_control

        server = await serve_control(rt, control_socket)
        closers.append(server.close)
        _log.info("control socket: %s", control_socket)
    if metrics_port is not None:
        from aiotp.ops.metrics import serve_metrics

        exporter = serve_metrics(rt, port=metrics_port)
        closers.append(_async(exporter.close))
        _log.info("metrics: http://127.0.0.1:%d/metrics", exporter.port)


async def _until_stop(app: Application, stop_asked: asyncio.Event, signals: StopSignals) -> int:
    asked = asyncio.ensure_future(stop_asked.wait())
    ended = asyncio.ensure_future(app.wait())
    try:
        await asyncio.wait({asked, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (asked, ended):
            task.cancel()
    if stop_asked.is_set():
        _log.info(
            "application %r: signal %s, stopping (within %.1f s)",
            app.name,
            signals.received,
            app.shutdown_timeout,
        )
        return EXIT_OK
    reason = ended.result() if ended.done() and not ended.cancelled() else None
    _log.error("application %r: its root supervisor exited (%r); stopping", app.name, reason)
    return EXIT_FAILED


def _async(close: Callable[[], Any]) -> Callable[[], Awaitable[None]]:
    async def closer() -> None:
        result = close()
        if asyncio.iscoroutine(result):
            await result

    return closer
