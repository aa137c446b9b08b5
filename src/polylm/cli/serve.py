"""`polylm serve`: the OpenAI-compatible server (see docs/serving.md)."""

from __future__ import annotations

import argparse
import os

from polylm.errors import PolyLMError
from polylm.templates import TEMPLATES


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from polylm.checkpoint import read_config
    from polylm.hub import resolve_model_dir
    from polylm.serve import ServeSettings, create_app, is_loopback
    from polylm.tokenizer import Tokenizer

    api_key = args.api_key or os.environ.get("POLYLM_API_KEY") or None
    if not is_loopback(args.host) and not api_key:
        raise PolyLMError(
            f"refusing to listen on {args.host} without an API key: anyone who can reach it could use the model. "
            "Pass --api-key KEY (or set POLYLM_API_KEY), or bind to 127.0.0.1"
        )
    for name in ("max_batch", "max_queue"):
        if getattr(args, name) < 1:
            raise PolyLMError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        raise PolyLMError(f"--max-prompt-tokens must be at least 1, got {args.max_prompt_tokens}")
    if args.threads is not None and args.threads < 1:
        raise PolyLMError(f"--threads must be at least 1, got {args.threads}")
    if args.timeout <= 0:
        raise PolyLMError(f"--timeout must be positive, got {args.timeout}")
    # Fail now on a wrong directory; the weights load in the background while /health says 503.
    model_dir = resolve_model_dir(args.model)
    read_config(model_dir)
    Tokenizer.from_dir(model_dir)
    settings = ServeSettings(
        model=str(model_dir),
        served_model_name=args.served_model_name or os.path.basename(os.path.normpath(args.model)),
        template=args.template,
        api_key=api_key,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_prompt_tokens=args.max_prompt_tokens,
        timeout=args.timeout,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        cors_origins=args.cors_origin or [],
    )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False)


def register(verbs: argparse._SubParsersAction) -> None:
    serve = verbs.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API, with a chat page",
        description="Serve a model: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics and a "
        "chat page at /. Concurrent requests are batched on one KV cache. Binds to 127.0.0.1 unless told "
        "otherwise, and refuses any other address without an API key.",
    )
    serve.add_argument("--model", required=True, help="model directory, or a hub id such as DAMO-NLP-MT/polylm-1.7b")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--api-key", help="require 'Authorization: Bearer KEY' on /v1/* (default: $POLYLM_API_KEY, else none)"
    )
    serve.add_argument("--max-batch", type=int, default=16, help="sequences decoded together at most (default 16)")
    serve.add_argument(
        "--max-prompt-tokens", type=int, help="longest prompt accepted, in tokens (default: the model's context)"
    )
    serve.add_argument("--max-queue", type=int, default=256, help="requests waiting at most before 429 (default 256)")
    serve.add_argument(
        "--timeout", type=float, default=600.0, help="seconds a request may wait and run before 503 (default 600)"
    )
    serve.add_argument(
        "--template",
        default="multialpaca",
        choices=list(TEMPLATES),
        help="default prompt format of chat requests (default multialpaca; a request may pass 'template')",
    )
    serve.add_argument("--served-model-name", help="the model id clients use (default: the directory's name)")
    serve.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    serve.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: the checkpoint's")
    serve.add_argument(
        "--threads", type=int, help="torch threads for the model (default: torch's; 1 helps small models on busy CPUs)"
    )
    serve.add_argument("--cors-origin", action="append", metavar="ORIGIN", help="allow browser calls from ORIGIN")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(run=_serve)
