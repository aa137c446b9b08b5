"""The FastAPI application: OpenAI-compatible routes over the batching engine, the chat page, health and metrics.

`create_app(settings)` returns an app that loads the model on a background thread when it starts (`/health`
answers 503 until then). Every error is an OpenAI-style body; bad input is a 4xx naming the parameter, never a
5xx. A client that disconnects cancels its jobs.

`/openapi.json` describes every route: the request bodies (the pydantic models of `protocol`), the 200 bodies
and event streams, and each error status a route can answer; `tests/test_serve_fuzz.py` holds the server to it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from polylm import __version__
from polylm.generate.text import TextGenerator
from polylm.serve.chat import add_chat_route
from polylm.serve.completions import add_completions_route
from polylm.serve.info import add_info_routes
from polylm.serve.jobs import ClientDisconnected
from polylm.serve.metrics import Metrics
from polylm.serve.protocol import DOCUMENTED, APIError
from polylm.serve.settings import ServeSettings
from polylm.serve.state import ServerState, load_text_generator
from polylm.serve.tokenization import add_tokenizer_routes

log = logging.getLogger("polylm.serve")


def create_app(settings: ServeSettings, loader: Callable[[], TextGenerator] | None = None) -> FastAPI:
    state = ServerState(settings, loader or (lambda: load_text_generator(settings)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="polylm-load", daemon=True).start()
        yield
        await run_in_threadpool(state.close)

    app = FastAPI(title="polylm", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.polylm = state
    app.openapi = lambda: openapi_document(app, settings)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(ClientDisconnected)
    async def client_gone(request: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it, metrics count it

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        body = APIError(exc.status_code, message, code=str(exc.status_code)).body()
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}", kind="server_error").body(), 500)

    add_info_routes(app, state)
    add_tokenizer_routes(app, state)
    add_completions_route(app, state)
    add_chat_route(app, state)
    return app


def openapi_document(app: FastAPI, settings: ServeSettings) -> dict:
    """FastAPI's document plus the schemas of the models the routes refer to (`protocol.schema_ref`), and the
    bearer scheme on the routes that answer 401 when the server has an API key."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description="An OpenAI-compatible server for PolyLM checkpoints (`polylm serve`, docs/serving.md).",
            routes=app.routes,
        )
        _, schemas = models_json_schema(
            [(model, "validation") for model in DOCUMENTED.values()], ref_template="#/components/schemas/{model}"
        )
        components = document.setdefault("components", {})
        components.setdefault("schemas", {}).update(schemas["$defs"])
        if settings.api_key:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for operations in document["paths"].values():
                for operation in operations.values():
                    if "401" in operation["responses"]:
                        operation["security"] = [{"bearer": []}]
        app.openapi_schema = document
    return app.openapi_schema


class MetricsMiddleware:
    """Pure ASGI: a BaseHTTPMiddleware would hide client disconnects from the routes."""

    ROUTES = (
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/models",
        "/health",
        "/metrics",
        "/",
        "/tokenize",
        "/detokenize",
        "/tokenizer_info",
        "/openapi.json",
    )

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in self.ROUTES else "other"
        started = time.monotonic()
        status = 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_flight -= 1
            self.metrics.request_done(endpoint, status, time.monotonic() - started)
