"""The HTTP server: OpenAI-compatible embeddings and generation, search over an index, metrics, a web page.

``create_app`` is wiring only: the state (``state.py``), the wire format (``wire.py``), middleware
(``middleware.py``) and one router per route group (``routes/``). One process holds one encoder.
Embedding requests are micro-batched (``batching.py``); all model and index work runs on one model
thread, so the event loop keeps serving (health checks, slow clients, streams) while a batch computes.
Generation streams from its own threads on the same weights.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from dec2vec.encoder import Encoder
from dec2vec.serving.middleware import BodyLimit, Measure
from dec2vec.serving.routes import ROUTERS
from dec2vec.serving.state import ServerSettings, ServerState
from dec2vec.serving.wire import error_body

SHUTDOWN_GRACE_S = 5  # on shutdown, open streams get this long to end, then are cancelled (uvicorn's
# timeout_graceful_shutdown); cancelling a stream stops its generation


def create_app(encoder: Encoder, index: str | None = None, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``encoder`` and, if given, the index at ``index`` (path or URL)."""
    state = ServerState(encoder, index, settings or ServerSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    public = state.settings.api_key is None  # with a key: the API description behind it, no docs pages
    app = FastAPI(
        title="dec2vec",
        lifespan=lifespan,
        docs_url="/docs" if public else None,
        redoc_url="/redoc" if public else None,
        openapi_url="/openapi.json" if public else None,
    )
    app.state.server = state
    for router in ROUTERS:
        app.include_router(router)

    app.add_middleware(BodyLimit, limit=state.settings.max_body_bytes)
    if state.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=state.settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    if state.settings.allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=state.settings.allowed_hosts)
    # Outermost: it sees the 413s and host refusals too.
    app.add_middleware(Measure, requests=state.metrics.requests, latency=state.metrics.latency)

    @app.exception_handler(HTTPException)  # FastAPI's, ours, and the router's 404/405
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        body = error_body(err.status_code, str(err.detail), getattr(err, "param", None))
        return JSONResponse(body, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'][1:]) or 'body'}: {e['msg']}" for e in err.errors()
        )
        return JSONResponse(error_body(400, f"invalid request: {problems}"), status_code=400)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, f"internal error: {type(err).__name__}"), status_code=500)

    return app
