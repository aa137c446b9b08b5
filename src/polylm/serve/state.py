"""What the server holds (`ServerState`): the model once it has loaded, its engine, its metrics, and the API key
that guards the routes (its settings: `serve.settings`)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import Request

from polylm.generate.text import TextGenerator
from polylm.serve.engine import Engine
from polylm.serve.metrics import Metrics
from polylm.serve.protocol import APIError, short_repr
from polylm.serve.responses import now
from polylm.serve.settings import ServeSettings

log = logging.getLogger("polylm.serve")


def load_text_generator(settings: ServeSettings) -> TextGenerator:
    return TextGenerator.load(settings.model, dtype=settings.dtype, device=settings.device)


class ServerState:
    def __init__(self, settings: ServeSettings, loader: Callable[[], TextGenerator]) -> None:
        settings.validate()
        self.settings, self.loader = settings, loader
        self.metrics = Metrics()
        self.engine: Engine | None = None
        self.generator: TextGenerator | None = None
        self.error: str | None = None
        self.model_name = settings.served_model_name or (Path(settings.model).name if settings.model else "polylm")
        self.created = now()
        self.max_prompt_tokens = 0
        self.tokenizing = 0
        """`/tokenize` and `/detokenize` requests being answered (changed on the event loop only)."""

    def load(self) -> None:
        try:
            generator = self.loader()
            context = generator.model.config.max_position_embeddings
            limit = self.settings.max_prompt_tokens or context
            if limit > context:
                log.warning("--max-prompt-tokens %d exceeds the model's context; using %d", limit, context)
                limit = context
            self.max_prompt_tokens = limit
            engine = Engine(generator, self.settings.max_batch, self.settings.max_queue, self.settings.threads).start()
            self.generator, self.engine = generator, engine
            log.info("model %s ready (context %d, max batch %d)", self.model_name, context, self.settings.max_batch)
        except Exception as exc:  # reported by /health; the process keeps running so that it can be seen
            log.exception("loading the model failed")
            self.error = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def ready(self) -> tuple[Engine, TextGenerator]:
        if self.engine is None or self.generator is None:
            message = f"model failed to load: {self.error}" if self.error else "the model is still loading"
            raise APIError(503, message, code="model_not_ready", kind="server_error")
        return self.engine, self.generator

    def authorize(self, request: Request) -> None:
        """The bearer token against --api-key in constant time: how long a wrong key takes to refuse must not tell
        how much of it was right."""
        key = self.settings.api_key
        if not key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        sent = token.strip().encode("latin-1")  # the header's bytes (Starlette decodes headers as latin-1)
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent, key.encode()):
            message = "missing API key: send 'Authorization: Bearer <key>'" if not header else "invalid API key"
            raise APIError(401, message, code="invalid_api_key", kind="authentication_error")

    @contextmanager
    def tokenizer_slot(self) -> Iterator[None]:
        """Tokenizer requests in flight are bounded as queued generation jobs are: beyond --max-queue, 429."""
        if self.tokenizing >= self.settings.max_queue:
            self.metrics.reject("queue_full")
            raise APIError(
                429,
                f"server is busy: {self.tokenizing} tokenizer requests are running (--max-queue "
                f"{self.settings.max_queue}); retry later",
                code="queue_full",
                kind="rate_limit_error",
            )
        self.tokenizing += 1
        try:
            yield
        finally:
            self.tokenizing -= 1

    def check_model(self, name: str | None) -> None:
        """A request's `model` is a name to compare, never a path to open: the server serves one model."""
        if name is not None and name != self.model_name:
            raise APIError(
                404,
                f"model {short_repr(name)} does not exist; this server serves {self.model_name!r}",
                "model",
                "model_not_found",
            )
