"""The routes about the server rather than generation: the chat page at `/`, `/health`, `/metrics` and
`/v1/models`."""

from __future__ import annotations

from importlib import resources
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from polylm.serve.metrics import CONTENT_TYPE
from polylm.serve.protocol import api_responses, json_response
from polylm.serve.state import ServerState
from polylm.templates import TEMPLATES


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    max_model_len: int
    templates: list[str]
    default_template: str


class ModelList(BaseModel):
    """The served model, once it has loaded (until then an empty list)."""

    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    """The model has loaded."""

    status: Literal["ok"]
    model: str


class HealthNotReady(BaseModel):
    """The model is loading, or loading it failed (`message` says why)."""

    status: Literal["loading", "error"]
    message: str | None = None


def add_info_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/", response_class=HTMLResponse, responses={200: {"description": "the chat page"}})
    async def index() -> HTMLResponse:
        page = resources.files("polylm.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @app.get("/health", responses={200: json_response(Health), 503: json_response(HealthNotReady)})
    async def health() -> JSONResponse:
        if state.engine is None:
            status = {"status": "error", "message": state.error} if state.error else {"status": "loading"}
            return JSONResponse(status, status_code=503)
        return JSONResponse({"status": "ok", "model": state.model_name})

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"description": f"Prometheus text ({CONTENT_TYPE}); no API key needed"}},
    )
    async def metrics() -> Response:
        return Response(state.metrics.render(state.engine, state.engine is not None), media_type=CONTENT_TYPE)

    @app.get("/v1/models", responses=api_responses(ModelList, 401))
    async def models(request: Request) -> JSONResponse:
        state.authorize(request)
        data = []
        if state.generator is not None:
            data.append(
                {
                    "id": state.model_name,
                    "object": "model",
                    "created": state.created,
                    "owned_by": "polylm",
                    "max_model_len": state.generator.model.config.max_position_embeddings,
                    "templates": list(TEMPLATES),
                    "default_template": state.settings.template,
                }
            )
        return JSONResponse({"object": "list", "data": data})
