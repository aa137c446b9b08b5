"""`polylm serve`: the OpenAI-compatible server (see docs/serving.md). Its flags are ServeSettings' fields."""

from __future__ import annotations

import argparse
import dataclasses
import os

from polylm.cli import options
from polylm.errors import PolyLMError
from polylm.serve.settings import ServeSettings, is_loopback


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from polylm.checkpoint import read_config
    from polylm.hub import resolve_model_dir
    from polylm.serve import create_app
    from polylm.tokenizer import Tokenizer

    settings = ServeSettings(**options.values(args, ServeSettings))
    settings.api_key = settings.api_key or os.environ.get("POLYLM_API_KEY") or None
    if not is_loopback(args.host) and not settings.api_key:
        raise PolyLMError(
            f"refusing to listen on {args.host} without an API key: anyone who can reach it could use the model. "
            "Pass --api-key KEY (or set POLYLM_API_KEY), or bind to 127.0.0.1"
        )
    settings.validate()
    # Fail now on a wrong directory; the weights load in the background while /health says 503.
    model_dir = resolve_model_dir(settings.model)
    read_config(model_dir)
    Tokenizer.from_dir(model_dir)
    name = settings.served_model_name or os.path.basename(os.path.normpath(settings.model))
    settings = dataclasses.replace(settings, model=str(model_dir), served_model_name=name)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False)


def register(verbs: argparse._SubParsersAction) -> None:
    serve = verbs.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API, with a chat page",
        description="Serve a model: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics and a "
        "chat page at /. Concurrent requests are batched on one KV cache. Binds to 127.0.0.1 unless told "
        "otherwise, and refuses any other address without an API key.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    options.add_fields(serve, ServeSettings, required=("model",))
    serve.set_defaults(run=_serve)
