"""A request's engine jobs: its prompts tokenized and checked against the limits, its jobs planned and submitted
(`Completion`), their events handed over from the engine thread to the event loop (`Collector`), cancelled when
the client goes away, and collected by prompt and choice; engine errors become `APIError`s."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from polylm.errors import PolyLMError
from polylm.generate.batch import Generation
from polylm.serve.engine import (
    Done,
    Engine,
    EngineClosed,
    EngineTimeout,
    Event,
    Failed,
    Job,
    QueueFull,
    Scored,
    Step,
)
from polylm.serve.metrics import Metrics
from polylm.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest, bad_parameter
from polylm.serve.responses import usage
from polylm.serve.state import ServerState

MAX_PIECE_CHARS = 16  # SentencePiece's longest piece: a text longer than 16 x N characters has more than N tokens


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
        self.state, self.param = state, param
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
                raise too_long(param, f"more than {limit}", limit)
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
                raise too_long(param, str(len(ids)), limit)
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
        jobs, limit = len(self.collector.jobs), self.engine.max_queue
        if jobs > limit:  # it could never be queued: a 429 would say "retry later" for ever (found by Schemathesis)
            raise bad_parameter(
                self.param,
                f"needs {jobs} jobs (a prompt both scored and continued takes two), more than the server's "
                f"--max-queue {limit}",
            )
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


def too_long(param: str, count: str, limit: int, flags: str = "--max-prompt-tokens") -> APIError:
    """The 400 for input over a token limit, naming the flags that set the limit."""
    return APIError(
        400,
        f"{param} is too long: {count} tokens, the server's limit is {limit} ({flags})",
        param=param,
        code="context_length_exceeded",
    )


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
