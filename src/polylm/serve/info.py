"""The routes about the server rather than generation: the chat page at `/`, `/health`, `/metrics` and
`/v1/models`."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from polylm.serve.metrics import CONTENT_TYPE
from polylm.serve.state import ServerState
from polylm.templates import TEMPLATES


def add_info_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        page = resources.files("polylm.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.engine is None:
            status = {"status": "error", "message": state.error} if state.error else {"status": "loading"}
            return JSONResponse(status, status_code=503)
        return JSONResponse({"status": "ok", "model": state.model_name})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(state.engine, state.engine is not None), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
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
