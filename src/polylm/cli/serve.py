"""`polylm serve`: the OpenAI-compatible server (see docs/serving.md). Its flags are ServeSettings' fields."""

from __future__ import annotations

import argparse

from polylm.cli import options
from polylm.serve.settings import ServeSettings


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from polylm.serve import create_app

    settings = ServeSettings(**options.values(args, ServeSettings)).resolved()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=False)  # fmt: skip


def register(verbs: argparse._SubParsersAction) -> None:
    serve = verbs.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API, with a chat page",
        description="Serve a model: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics and a "
        "chat page at /. Concurrent requests are batched on one KV cache. Binds to 127.0.0.1 unless told "
        "otherwise, and refuses any other address without an API key.",
    )
    options.add_fields(serve, ServeSettings, required=("model",))
    serve.set_defaults(run=_serve)
