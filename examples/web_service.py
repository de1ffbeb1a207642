"""aiotp inside a web service: a FastAPI app whose lifespan runs an `aiotp.Application`.

The application holds a process pool ("ml": CPU work, each worker a child process), a thread
pool ("io": blocking calls) and a named actor ("hits": a counter). Endpoints:

- ``POST /predict``       {"x": 2.0} with an ``X-Session-Id`` header: routed to the session's worker
- ``GET  /count/{n}``     a generator tool streamed as newline-delimited JSON
- ``GET  /lookup/{key}``  a blocking lookup on the thread pool
- ``GET  /hits``          the actor's count of requests served
- ``GET  /snapshot``      `rt.snapshot()`: the tree, the pools, the sessions
- ``GET  /healthz``       200 once the application runs

aiotp's typed errors become typed HTTP answers (`errors_as_responses`): a worker that died under a
request is 503 ``{"error": "WorkerCrashed"}`` (safe to retry for idempotent work), a full pool
503 ``PoolBusy`` with ``Retry-After``, a timeout 504, a tool's own exception 500 with its type and
message but never the worker's traceback.

Run it: ``python examples/web_service.py --port 8000`` (binds 127.0.0.1). SIGTERM (or Ctrl-C)
makes uvicorn stop accepting, finish what is in flight, and leave the lifespan, which stops the
application: pools in reverse start order, worker processes included. (uvicorn then re-raises
the signal, as its convention is: the exit status says "stopped by SIGTERM", after a clean stop.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))  # web_adapters, for the workers too

from web_adapters import Directory

import aiotp


class Hits(aiotp.Actor):
    async def init(self) -> None:
        self.count = 0

    async def handle_cast(self, msg: Any) -> None:
        self.count += msg

    async def handle_call(self, msg: Any, caller: aiotp.Caller) -> Any:
        return self.count


def build_application() -> aiotp.Application:
    return aiotp.Application(
        "web",
        [
            aiotp.ChildSpec("hits", Hits, name="hits"),
            aiotp.pool_spec("ml", "web_adapters:Model", profile="process", size=2),
            aiotp.pool_spec("io", Directory, profile="thread", size=2),
        ],
        shutdown_timeout=10.0,
    )


# -- aiotp's errors as HTTP answers ---------------------------------------------------------
_STATUS: list[tuple[type[BaseException], int]] = [
    (aiotp.WorkerCrashed, 503),  # SessionWorkerLost included
    (aiotp.PoolBusy, 503),  # WorkerBusy and CheckoutTimeout included
    (aiotp.CallTimeout, 504),
    (aiotp.ToolError, 500),
    (aiotp.UnknownPool, 500),
    (aiotp.AiotpError, 500),
]


def errors_as_responses(api: FastAPI) -> None:
    """Map aiotp's exceptions to JSON answers naming the error type (never a traceback)."""

    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        headers = {"Retry-After": "1"} if status == 503 else None
        body = {"error": type(exc).__name__, "detail": str(exc)}
        return JSONResponse(body, status_code=status, headers=headers)

    for kind, _code in _STATUS:
        api.add_exception_handler(kind, handle)


# -- the web app ----------------------------------------------------------------------------
class PredictRequest(BaseModel):
    x: float
    work_ms: float = 0.0


def build_api(make_application: Any = build_application) -> FastAPI:
    """The web app; each run of its lifespan starts a fresh `Application` (an application
    starts once, and a test client may enter the lifespan several times)."""

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        tree: aiotp.Application = make_application()
        api.state.tree = tree
        api.state.rt = await tree.start()
        try:
            yield
        finally:
            await tree.stop()

    api = FastAPI(lifespan=lifespan)
    errors_as_responses(api)

    def runtime(request: Request) -> aiotp.Runtime:
        rt: aiotp.Runtime = request.app.state.rt
        return rt

    @api.get("/healthz")
    async def healthz(request: Request) -> dict[str, str]:
        return {"status": "ok", "application": request.app.state.tree.state.value}

    @api.post("/predict")
    async def predict(
        body: PredictRequest, request: Request, x_session_id: str | None = Header(default=None)
    ) -> Any:
        rt = runtime(request)
        result = await rt.execute(
            "ml", "predict", {"x": body.x, "work_ms": body.work_ms}, session=x_session_id
        )
        rt.cast("hits", 1)
        return result

    @api.get("/count/{n}")
    async def count(n: int, request: Request) -> StreamingResponse:
        rt = runtime(request)

        async def lines() -> AsyncIterator[str]:
            try:
                async for item in rt.stream("ml", "count", {"n": n}):
                    yield json.dumps({"item": item}) + "\n"
            except aiotp.AiotpError as exc:  # headers are gone: say it in the stream
                yield json.dumps({"error": type(exc).__name__, "detail": str(exc)}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @api.get("/lookup/{key}")
    async def lookup(key: str, request: Request) -> dict[str, str]:
        return {"value": await runtime(request).execute("io", "lookup", {"key": key})}

    @api.get("/hits")
    async def hits(request: Request) -> dict[str, int]:
        return {"hits": await runtime(request).call("hits", "count")}

    @api.get("/snapshot")
    async def snapshot(request: Request) -> Any:
        return runtime(request).snapshot()

    return api


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--graceful", type=float, default=10.0, help="seconds for in-flight work")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        build_api(),
        host="127.0.0.1",
        port=args.port,
        timeout_graceful_shutdown=args.graceful,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
