"""The FastAPI application: OpenAI-compatible routes over the batching engine, the chat page, health and metrics.

`create_app(settings)` returns an app that loads the model on a background thread when it starts (`/health`
answers 503 until then). Every error is an OpenAI-style body; bad input is a 4xx naming the parameter, never a
5xx. A client that disconnects cancels its jobs.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from polylm.errors import PolyLMError
from polylm.generate.batch import Generation
from polylm.generate.text import TextGenerator
from polylm.serve.engine import Done, Engine, EngineClosed, EngineTimeout, Event, Failed, Job, QueueFull, Scored, Step
from polylm.serve.metrics import CONTENT_TYPE, Metrics
from polylm.serve.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    bad_parameter,
    validation_error,
)
from polylm.serve.responses import (
    ChatLogprobs,
    CompletionLogprobs,
    StreamText,
    final_text,
    new_id,
    now,
    usage,
)
from polylm.templates import TEMPLATES, render_messages

log = logging.getLogger("polylm.serve")

MAX_PIECE_CHARS = 16  # SentencePiece's longest piece: a text longer than 16 x N characters has more than N tokens
DEFAULT_CHAT_TEMPLATE = "multialpaca"


@dataclass
class ServeSettings:
    """What `polylm serve` was told (see its --help)."""

    model: str | None = None
    served_model_name: str | None = None
    template: str = DEFAULT_CHAT_TEMPLATE
    """Default prompt format of /v1/chat/completions (a request may pass `template`)."""
    api_key: str | None = None
    max_batch: int = 16
    max_queue: int = 256
    max_prompt_tokens: int | None = None
    """Default: the model's context."""
    timeout: float = 600.0
    """Seconds a request may wait plus run before it is answered 503."""
    device: str = "cpu"
    dtype: str | None = None
    threads: int | None = None
    """torch intra-op threads of the worker (default: torch's)."""
    max_body_bytes: int = 16 * 1024 * 1024
    cors_origins: list[str] = field(default_factory=list)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_text_generator(settings: ServeSettings) -> TextGenerator:
    from polylm.checkpoint import load_model
    from polylm.hub import resolve_model_dir
    from polylm.tokenizer import Tokenizer

    model_dir = resolve_model_dir(settings.model)
    model = load_model(model_dir, dtype=settings.dtype, device=settings.device)
    return TextGenerator(model, Tokenizer.from_dir(model_dir), "plain")


class ServerState:
    def __init__(self, settings: ServeSettings, loader: Callable[[], TextGenerator]) -> None:
        if settings.template not in TEMPLATES:
            raise PolyLMError(
                f"unknown template {settings.template!r} (--template); choose one of {', '.join(TEMPLATES)}"
            )
        self.settings, self.loader = settings, loader
        self.metrics = Metrics()
        self.engine: Engine | None = None
        self.generator: TextGenerator | None = None
        self.error: str | None = None
        self.model_name = settings.served_model_name or (Path(settings.model).name if settings.model else "polylm")
        self.created = now()
        self.max_prompt_tokens = 0

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
        key = self.settings.api_key
        if not key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            message = "missing API key: send 'Authorization: Bearer <key>'" if not header else "invalid API key"
            raise APIError(401, message, code="invalid_api_key", kind="authentication_error")


# ---- request plumbing ---------------------------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> object:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(
            413, f"request body of {declared} bytes exceeds the server's limit of {limit}", code="body_too_large"
        )
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body exceeds the server's limit of {limit} bytes", code="body_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientDisconnected("client disconnected while sending the request") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise APIError(400, "request body is empty; send a JSON object", code="invalid_json")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"request body is not valid JSON ({exc})", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "request body is nested too deeply", code="invalid_json") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse(model: type[BaseModel], body: object):
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except RecursionError:
        raise APIError(400, "request body is nested too deeply", code="invalid_json") from None


class ClientDisconnected(Exception):
    """The client went away before its answer was ready; its jobs are cancelled."""


class Collector:
    """The jobs of one request and their events, handed from the engine thread to the event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, Event | None]] = asyncio.Queue()
        self.jobs: list[Job] = []
        self.open = 0

    def add(self, **fields) -> Job:
        index = len(self.jobs)
        job = Job(emit=lambda event: self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event)), **fields)
        self.jobs.append(job)
        self.open += 1
        return job

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()
        self.queue.put_nowait((-1, None))  # wakes a reader so that it can stop

    async def next(self) -> tuple[int, Event]:
        index, event = await self.queue.get()
        if event is None:
            raise ClientDisconnected("client disconnected")
        if isinstance(event, Done | Scored | Failed):
            self.open -= 1
        return index, event

    def submit(self, engine: Engine, metrics: Metrics) -> None:
        for count, job in enumerate(self.jobs):
            try:
                engine.submit(job)
            except QueueFull as exc:
                for submitted in self.jobs[:count]:
                    submitted.cancel()
                metrics.reject("queue_full")
                raise APIError(
                    429, f"server is busy: {exc}; retry later", code="queue_full", kind="rate_limit_error"
                ) from None
            except EngineClosed as exc:
                raise APIError(503, str(exc), code="shutting_down", kind="server_error") from None
            except PolyLMError as exc:
                raise APIError(400, str(exc), code="invalid_parameter") from None


async def watch_disconnect(request: Request, collector: Collector) -> None:
    """Cancel the request's jobs when its client goes away (the body has been read: receive waits for that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            collector.cancel()
            return


def failure(error: Exception, metrics: Metrics) -> APIError:
    if isinstance(error, EngineTimeout):
        metrics.reject("timeout")
        return APIError(503, str(error), code="timeout", kind="server_error")
    if isinstance(error, EngineClosed):
        return APIError(503, str(error), code="shutting_down", kind="server_error")
    if isinstance(error, PolyLMError):
        return APIError(400, str(error), code="invalid_parameter")
    return APIError(500, f"internal error: {type(error).__name__}: {error}", kind="server_error")


def sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# ---- one request: the shared work of completions and chat ------------------------------------------------------


@dataclass
class PromptWork:
    ids: list[int]
    text: str
    score: Job | None = None
    generate: Job | None = None


class Completion:
    """A validated request turned into engine jobs: prompts, config, rows and how choices map to jobs."""

    def __init__(
        self,
        state: ServerState,
        request: CompletionRequest | ChatCompletionRequest,
        prompts: list[str | list[int]],
        tokenized: list[list[int]],
        max_tokens: int | None,
        logprobs: int | None,
        param: str = "prompt",
    ) -> None:
        self.state = state
        engine, generator = state.ready()
        self.engine, self.tokenizer = engine, generator.tokenizer
        self.request, self.n = request, request.n
        self.logprobs = logprobs
        self.collector = Collector()
        self.started = time.monotonic()
        self.first_token_seen = False
        context = generator.model.config.max_position_embeddings
        self.works: list[PromptWork] = []
        for prompt, ids in zip(prompts, tokenized, strict=True):
            text = prompt if isinstance(prompt, str) else self.tokenizer.decode(ids)
            self.works.append(PromptWork(ids, text))
        longest = max(len(w.ids) for w in self.works)
        eos = generator.model.config.eos_token_id
        budget = max_tokens if max_tokens is not None else max(context - longest, 0)
        try:
            self.config, self.rows = request.generation_config(budget, eos)
        except PolyLMError as exc:
            raise APIError(400, str(exc), code="invalid_parameter") from None
        if self.config.num_beams > 1 and logprobs is not None:
            raise bad_parameter("logprobs", "is not supported with beam search", "unsupported")
        width = self.config.num_beams if self.config.num_beams > 1 else self.rows
        if width > engine.max_batch:
            param = "num_beams" if self.config.num_beams > 1 else "n"
            raise bad_parameter(param, f"needs {width} rows, more than the server's --max-batch {engine.max_batch}")
        wants_tokens = max_tokens is None or max_tokens > 0
        for index, work in enumerate(self.works):
            if len(work.ids) >= context and wants_tokens:
                raise APIError(
                    400,
                    f"{param}{'' if len(self.works) == 1 else f' {index}'} has {len(work.ids)} tokens; the model's "
                    f"context is {context} tokens, leaving no room to generate",
                    param=param,
                    code="context_length_exceeded",
                )
        self.timeout = state.settings.timeout

    @staticmethod
    async def tokenize(state: ServerState, prompts: list[str | list[int]], param: str) -> list[list[int]]:
        _, generator = state.ready()
        tokenizer, limit = generator.tokenizer, state.max_prompt_tokens
        if len(prompts) > state.settings.max_queue:
            raise bad_parameter(param, f"at most {state.settings.max_queue} prompts per request, got {len(prompts)}")
        for prompt in prompts:
            if isinstance(prompt, str) and len(prompt) > MAX_PIECE_CHARS * limit:
                raise _too_long(param, f"more than {limit}", limit)
        texts = [p for p in prompts if isinstance(p, str)]
        encoded = iter(await run_in_threadpool(tokenizer.encode_batch, texts) if texts else [])
        result = []
        for prompt in prompts:
            ids = next(encoded) if isinstance(prompt, str) else prompt
            if not ids:
                raise bad_parameter(param, "encodes to no tokens; send at least one character")
            bad = next((t for t in ids if t >= tokenizer.vocab_size), None)
            if bad is not None:
                raise bad_parameter(param, f"token id {bad} is outside the vocabulary of {tokenizer.vocab_size}")
            if len(ids) > limit:
                raise _too_long(param, str(len(ids)), limit)
            result.append(ids)
        return result

    @classmethod
    async def create(cls, state: ServerState, request, prompts, max_tokens, logprobs, param: str = "prompt"):
        tokenized = await cls.tokenize(state, prompts, param)
        return cls(state, request, prompts, tokenized, max_tokens, logprobs, param)

    def plan(self, echo_scores: bool) -> None:
        for work in self.works:
            if echo_scores:
                work.score = self.collector.add(
                    kind="score", prompt=work.ids, logprobs=self.logprobs, timeout=self.timeout
                )
            if self.config.max_new_tokens and self.config.max_new_tokens > 0:
                kind = "beam" if self.config.num_beams > 1 else "generate"
                work.generate = self.collector.add(
                    kind=kind,
                    prompt=work.ids,
                    config=self.config,
                    rows=self.rows,
                    logprobs=self.logprobs,
                    stream=self.request.stream,
                    timeout=self.timeout,
                )

    def submit(self) -> None:
        self.collector.submit(self.engine, self.state.metrics)

    def work_of(self, job_index: int) -> tuple[int, PromptWork]:
        job = self.collector.jobs[job_index]
        for index, work in enumerate(self.works):
            if job is work.score or job is work.generate:
                return index, work
        raise KeyError(job_index)

    def note_first_token(self) -> None:
        if not self.first_token_seen:
            self.first_token_seen = True
            self.state.metrics.first_token.observe(time.monotonic() - self.started)

    async def collect(self, request: Request) -> tuple[dict[int, list[Generation]], dict[int, list]]:
        """Wait for every job; returns generations and prompt scores by prompt index."""
        generations: dict[int, list[Generation]] = {}
        scores: dict[int, list] = {}
        self.generated_logprobs: dict[int, list[list]] = {}

        async def gather() -> None:
            while self.collector.open:
                job_index, event = await self.collector.next()
                index, _ = self.work_of(job_index)
                if isinstance(event, Failed):
                    self.collector.cancel()
                    raise failure(event.error, self.state.metrics)
                if isinstance(event, Step):
                    self.note_first_token()
                elif isinstance(event, Done):
                    generations[index] = event.generations
                    if event.logprobs is not None:
                        self.generated_logprobs[index] = event.logprobs
                elif isinstance(event, Scored):
                    scores[index] = event.entries

        watcher = asyncio.create_task(watch_disconnect(request, self.collector))
        try:
            await asyncio.wait_for(gather(), self.timeout + 30)
        except asyncio.TimeoutError:
            self.collector.cancel()
            self.state.metrics.reject("timeout")
            raise APIError(503, "request timed out", code="timeout", kind="server_error") from None
        finally:
            watcher.cancel()
        return generations, scores

    def logprobs_of(self, prompt_index: int, choice: int) -> list:
        """Generated tokens' log-probabilities of one choice (greedy choices share row 0)."""
        rows = self.generated_logprobs.get(prompt_index)
        if not rows:
            return []
        return rows[choice if self.rows > 1 else 0]

    def choices_of(self, generations: list[Generation] | None) -> list[Generation]:
        """The n choices of one prompt: greedy decoding runs once and is repeated n times."""
        if generations is None:
            return [Generation([], "length") for _ in range(self.n)]
        if len(generations) == 1 and self.n > 1:
            return [Generation(list(generations[0].token_ids), generations[0].finish_reason) for _ in range(self.n)]
        return generations

    def record_usage(self, completion_tokens: int) -> dict:
        prompt_tokens = sum(len(w.ids) for w in self.works)
        self.state.metrics.tokens(prompt_tokens, completion_tokens)
        return usage(prompt_tokens, completion_tokens)


def _too_long(param: str, count: str, limit: int) -> APIError:
    return APIError(
        400,
        f"{param} is too long: {count} tokens, the server's limit is {limit} (--max-prompt-tokens)",
        param=param,
        code="context_length_exceeded",
    )


# ---- the app ------------------------------------------------------------------------------------------------


def create_app(settings: ServeSettings, loader: Callable[[], TextGenerator] | None = None) -> FastAPI:
    state = ServerState(settings, loader or (lambda: load_text_generator(settings)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="polylm-load", daemon=True).start()
        yield
        await run_in_threadpool(state.close)

    app = FastAPI(title="polylm", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.polylm = state
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
                    "default_template": settings.template,
                }
            )
        return JSONResponse({"object": "list", "data": data})

    # vLLM's tokenizer endpoints: lm-eval's local-completions finds them and then tokenizes with the server's own
    # SentencePiece model (the ids the completions endpoint uses) instead of a Hugging Face tokenizer.
    @app.get("/tokenizer_info")
    async def tokenizer_info(request: Request) -> JSONResponse:
        state.authorize(request)
        _, generator = state.ready()
        sp = generator.tokenizer.sp
        return JSONResponse(
            {
                "tokenizer_class": "SentencePiece",
                "eos_token": sp.id_to_piece(sp.eos_id()),
                "bos_token": sp.id_to_piece(sp.bos_id()),
                "unk_token": sp.id_to_piece(sp.unk_id()),
                "pad_token": None,
                "add_bos_token": False,
                "add_eos_token": False,
                "vocab_size": generator.tokenizer.vocab_size,
                "model_max_length": generator.model.config.max_position_embeddings,
            }
        )

    @app.post("/tokenize")
    async def tokenize(request: Request) -> JSONResponse:
        state.authorize(request)
        body = parse(TokenizeRequest, await read_json(request, settings.max_body_bytes))
        _, generator = state.ready()
        check_model(body.model)
        tokenizer = generator.tokenizer
        special = {tokenizer.sp.id_to_piece(i): i for i in (tokenizer.eos_id, tokenizer.bos_id) if i >= 0}
        if body.prompt in special:  # a special token by name, as a transformers tokenizer reads it
            tokens = [special[body.prompt]]
        else:
            tokens = await run_in_threadpool(tokenizer.encode, body.prompt)
        limit = generator.model.config.max_position_embeddings
        return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": limit})

    @app.post("/detokenize")
    async def detokenize(request: Request) -> JSONResponse:
        state.authorize(request)
        body = parse(DetokenizeRequest, await read_json(request, settings.max_body_bytes))
        _, generator = state.ready()
        check_model(body.model)
        bad = next((t for t in body.tokens if t >= generator.tokenizer.vocab_size), None)
        if bad is not None:
            raise bad_parameter(
                "tokens", f"token id {bad} is outside the vocabulary of {generator.tokenizer.vocab_size}"
            )
        return JSONResponse({"prompt": generator.tokenizer.decode(body.tokens)})

    def check_model(name: str | None) -> None:
        if name is not None and name != state.model_name:
            raise APIError(
                404,
                f"model {name!r} does not exist; this server serves {state.model_name!r}",
                "model",
                "model_not_found",
            )

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        state.authorize(request)
        body = parse(CompletionRequest, await read_json(request, settings.max_body_bytes))
        state.ready()
        check_model(body.model)
        if body.logprobs is not None and body.logprobs > 0 and body.use_beam_search:
            raise bad_parameter("logprobs", "is not supported with beam search", "unsupported")
        max_tokens = 16 if body.max_tokens is None else body.max_tokens
        work = await Completion.create(state, body, body.prompts(), max_tokens, body.logprobs)
        echo_scores = body.echo and body.logprobs is not None
        work.plan(echo_scores)
        work.submit()
        if body.stream:
            return await stream_completion(work, body, request)
        generations, scores = await work.collect(request)
        choices, completion_tokens = [], 0
        stops = work.config.stop
        for index, prompt in enumerate(work.works):
            for j, generation in enumerate(work.choices_of(generations.get(index))):
                completion_tokens += len(generation.token_ids)
                text = final_text(work.tokenizer, generation.token_ids, stops)
                logprobs = None
                if body.logprobs is not None:
                    builder = CompletionLogprobs(work.tokenizer)
                    if body.echo:
                        for token, entry in zip(prompt.ids, scores.get(index, [None] * len(prompt.ids)), strict=True):
                            builder.add(token, entry)
                        builder.restart(len(prompt.text))
                    entries = work.logprobs_of(index, j)
                    for token, entry in zip(generation.token_ids, entries, strict=False):
                        builder.add(token, entry)
                    logprobs = builder.body()
                choices.append(
                    {
                        "index": index * work.n + j,
                        "text": (prompt.text if body.echo else "") + text,
                        "logprobs": logprobs,
                        "finish_reason": generation.finish_reason,
                    }
                )
        return JSONResponse(
            {
                "id": new_id("cmpl"),
                "object": "text_completion",
                "created": now(),
                "model": state.model_name,
                "choices": choices,
                "usage": work.record_usage(completion_tokens),
            }
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        state.authorize(request)
        body = parse(ChatCompletionRequest, await read_json(request, settings.max_body_bytes))
        state.ready()
        check_model(body.model)
        template = body.template_name(settings.template)
        try:
            prompt = render_messages(template, [(m.role, m.text()) for m in body.messages])
        except PolyLMError as exc:
            raise bad_parameter("messages", str(exc)) from None
        logprobs = body.logprob_alternatives()
        work = await Completion.create(state, body, [prompt], body.token_limit(), logprobs, param="messages")
        work.plan(echo_scores=False)
        work.submit()
        if body.stream:
            return await stream_chat(work, body, request)
        generations, _ = await work.collect(request)
        choices, completion_tokens = [], 0
        for j, generation in enumerate(work.choices_of(generations.get(0))):
            completion_tokens += len(generation.token_ids)
            chat_logprobs = None
            if logprobs is not None:
                builder = ChatLogprobs(work.tokenizer)
                entries = work.logprobs_of(0, j)
                for token, entry in zip(generation.token_ids, entries, strict=False):
                    builder.add(token, entry)
                chat_logprobs = builder.body()
            choices.append(
                {
                    "index": j,
                    "message": {
                        "role": "assistant",
                        "content": final_text(work.tokenizer, generation.token_ids, work.config.stop),
                    },
                    "logprobs": chat_logprobs,
                    "finish_reason": generation.finish_reason,
                }
            )
        return JSONResponse(
            {
                "id": new_id("chatcmpl"),
                "object": "chat.completion",
                "created": now(),
                "model": state.model_name,
                "choices": choices,
                "usage": work.record_usage(completion_tokens),
            }
        )

    return app


# ---- streaming --------------------------------------------------------------------------------------------------


async def _first_event(work: Completion, request: Request) -> tuple[int, Event] | None:
    """Wait until the engine has started on the request, so that a timeout or error can still be a status code."""
    if not work.collector.jobs:
        return None
    watcher = asyncio.create_task(watch_disconnect(request, work.collector))
    try:
        first = await asyncio.wait_for(work.collector.next(), work.timeout + 30)
    except asyncio.TimeoutError:
        work.collector.cancel()
        raise APIError(503, "request timed out", code="timeout", kind="server_error") from None
    finally:
        watcher.cancel()
    if isinstance(first[1], Failed):
        work.collector.cancel()
        raise failure(first[1].error, work.state.metrics)
    return first


async def _events(work: Completion, first: tuple[int, Event] | None) -> AsyncIterator[tuple[int, Event]]:
    if first is not None:
        yield first
    while work.collector.open:
        yield await work.collector.next()


class _ChoiceStream:
    """Per choice: streamed text and log-probabilities so far."""

    def __init__(self, work: Completion, logprobs_builder) -> None:
        self.text = StreamText(work.tokenizer, work.config.stop)
        self.logprobs = logprobs_builder
        self.sent_logprobs = 0
        self.finished = False


async def stream_completion(work: Completion, body: CompletionRequest, request: Request) -> StreamingResponse:
    first = await _first_event(work, request)
    state, response_id, created = work.state, new_id("cmpl"), now()

    def chunk(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> bytes:
        choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
        return sse(
            {
                "id": response_id,
                "object": "text_completion",
                "created": created,
                "model": state.model_name,
                "choices": [choice],
            }
        )

    streams = {}
    for index in range(len(work.works)):
        for j in range(work.n):
            builder = CompletionLogprobs(work.tokenizer) if body.logprobs is not None else None
            streams[index * work.n + j] = _ChoiceStream(work, builder)

    def echo(index: int, scores: list | None) -> list[bytes]:
        prompt, out = work.works[index], []
        for j in range(work.n):
            stream = streams[index * work.n + j]
            logprobs = None
            if stream.logprobs is not None:
                for token, entry in zip(prompt.ids, scores or [None] * len(prompt.ids), strict=True):
                    stream.logprobs.add(token, entry)
                stream.logprobs.restart(len(prompt.text))
                logprobs = stream.logprobs.body()
                stream.sent_logprobs = len(stream.logprobs.tokens)
            out.append(chunk(index * work.n + j, prompt.text, None, logprobs))
        return out

    def finish_all(index: int, generations: list[Generation] | None) -> list[bytes]:
        out = []
        for j, generation in enumerate(work.choices_of(generations)):
            stream = streams[index * work.n + j]
            if stream.finished:
                continue
            stream.finished = True
            delta = stream.text.add(generation.token_ids[len(stream.text.tokens) :], finished=True)
            out.append(chunk(index * work.n + j, delta, generation.finish_reason, None))
        return out

    async def generate() -> AsyncIterator[bytes]:
        completion_tokens = 0
        try:
            for index, prompt in enumerate(work.works):
                if body.echo and prompt.score is None:
                    for piece in echo(index, None):
                        yield piece
                if prompt.generate is None and prompt.score is None:
                    for piece in finish_all(index, None):
                        yield piece
            async for job_index, event in _events(work, first):
                index, prompt = work.work_of(job_index)
                if isinstance(event, Failed):
                    yield sse(failure(event.error, state.metrics).body())
                    work.collector.cancel()
                    break
                if isinstance(event, Scored):
                    for piece in echo(index, event.entries):
                        yield piece
                    if prompt.generate is None:
                        for piece in finish_all(index, None):
                            yield piece
                elif isinstance(event, Step):
                    work.note_first_token()
                    for update in event.rows:
                        targets = [update.row] if work.rows > 1 else range(work.n)
                        for j in targets:
                            stream = streams[index * work.n + j]
                            delta = stream.text.add([update.token], finished=update.finish_reason is not None)
                            logprobs = None
                            if stream.logprobs is not None:
                                stream.logprobs.add(update.token, update.logprob)
                                logprobs = stream.logprobs.body(stream.sent_logprobs)
                                stream.sent_logprobs = len(stream.logprobs.tokens)
                            if update.finish_reason is not None:
                                stream.finished = True
                            if delta or logprobs is not None or update.finish_reason is not None:
                                yield chunk(index * work.n + j, delta, update.finish_reason, logprobs)
                elif isinstance(event, Done):
                    completion_tokens += sum(len(g.token_ids) for g in work.choices_of(event.generations))
                    for piece in finish_all(index, event.generations):
                        yield piece
            else:
                if body.stream_options is not None and body.stream_options.include_usage:
                    payload = {
                        "id": response_id,
                        "object": "text_completion",
                        "created": created,
                        "model": state.model_name,
                        "choices": [],
                        "usage": work.record_usage(completion_tokens),
                    }
                    yield sse(payload)
                else:
                    work.record_usage(completion_tokens)
            yield sse("[DONE]")
        finally:
            work.collector.cancel()

    return StreamingResponse(generate(), media_type="text/event-stream", headers=SSE_HEADERS)


async def stream_chat(work: Completion, body: ChatCompletionRequest, request: Request) -> StreamingResponse:
    first = await _first_event(work, request)
    state, response_id, created = work.state, new_id("chatcmpl"), now()
    logprobs_on = body.logprobs

    def chunk(index: int, delta: dict, finish_reason: str | None, logprobs: dict | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return sse(
            {
                "id": response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": state.model_name,
                "choices": [choice],
            }
        )

    streams = {j: _ChoiceStream(work, ChatLogprobs(work.tokenizer) if logprobs_on else None) for j in range(work.n)}

    async def generate() -> AsyncIterator[bytes]:
        completion_tokens = 0
        try:
            for j in range(work.n):
                yield chunk(j, {"role": "assistant", "content": ""}, None)
            async for _, event in _events(work, first):
                if isinstance(event, Failed):
                    yield sse(failure(event.error, state.metrics).body())
                    work.collector.cancel()
                    break
                if isinstance(event, Step):
                    work.note_first_token()
                    for update in event.rows:
                        for j in [update.row] if work.rows > 1 else range(work.n):
                            stream = streams[j]
                            delta = stream.text.add([update.token], finished=update.finish_reason is not None)
                            logprobs = None
                            if stream.logprobs is not None:
                                stream.logprobs.add(update.token, update.logprob)
                                logprobs = stream.logprobs.body(stream.sent_logprobs)
                                stream.sent_logprobs = len(stream.logprobs.content)
                            if delta or logprobs:
                                yield chunk(j, {"content": delta}, None, logprobs)
                elif isinstance(event, Done):
                    generations = work.choices_of(event.generations)
                    completion_tokens += sum(len(g.token_ids) for g in generations)
                    for j, generation in enumerate(generations):
                        stream = streams[j]
                        delta = stream.text.add(generation.token_ids[len(stream.text.tokens) :], finished=True)
                        if delta:
                            yield chunk(j, {"content": delta}, None)
                        yield chunk(j, {}, generation.finish_reason)
            else:
                if work.collector.jobs == []:
                    for j in range(work.n):
                        yield chunk(j, {}, "length")
                if body.stream_options is not None and body.stream_options.include_usage:
                    payload = {
                        "id": response_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": state.model_name,
                        "choices": [],
                        "usage": work.record_usage(completion_tokens),
                    }
                    yield sse(payload)
                else:
                    work.record_usage(completion_tokens)
            yield sse("[DONE]")
        finally:
            work.collector.cancel()

    return StreamingResponse(generate(), media_type="text/event-stream", headers=SSE_HEADERS)


# ---- metrics middleware (pure ASGI: a BaseHTTPMiddleware would hide client disconnects from the routes) ----------


class MetricsMiddleware:
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
