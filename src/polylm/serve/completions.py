"""`POST /v1/completions`: prompts continued, optionally echoed and scored, whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from polylm.generate.batch import Generation
from polylm.serve.body import parse, read_json
from polylm.serve.engine import Done, Failed, Scored, Step
from polylm.serve.jobs import Completion, failure
from polylm.serve.protocol import CompletionRequest, api_responses, bad_parameter, json_request
from polylm.serve.responses import CompletionChunk, CompletionLogprobs, CompletionResponse, Head, final_text
from polylm.serve.state import ServerState
from polylm.serve.streaming import SSE_HEADERS, ChoiceStream, events, first_event, sse, usage_chunks


def add_completions_route(app: FastAPI, state: ServerState) -> None:
    @app.post(
        "/v1/completions",
        responses=api_responses(CompletionResponse, 400, 401, 404, 413, 429, 503, stream=CompletionChunk),
        openapi_extra=json_request(CompletionRequest),
    )
    async def completions(request: Request) -> Response:
        state.authorize(request)
        body = parse(CompletionRequest, await read_json(request, state.settings.max_body_bytes))
        state.ready()
        state.check_model(body.model)
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
        head = Head.new("cmpl", "text_completion", state.model_name)
        return JSONResponse(head.body(choices, work.record_usage(completion_tokens)))


async def stream_completion(work: Completion, body: CompletionRequest, request: Request) -> StreamingResponse:
    first = await first_event(work, request)
    state = work.state
    head = Head.new("cmpl", "text_completion", state.model_name)

    def chunk(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> bytes:
        return sse(head.body([{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]))

    streams = {}
    for index in range(len(work.works)):
        for j in range(work.n):
            builder = CompletionLogprobs(work.tokenizer) if body.logprobs is not None else None
            streams[index * work.n + j] = ChoiceStream(work, builder)

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
                stream.sent_logprobs = len(stream.logprobs)
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
            async for job_index, event in events(work, first):
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
                            finished = update.finish_reason is not None
                            delta, logprobs = stream.step(update.token, update.logprob, finished)
                            if update.finish_reason is not None:
                                stream.finished = True
                            if delta or logprobs is not None or update.finish_reason is not None:
                                yield chunk(index * work.n + j, delta, update.finish_reason, logprobs)
                elif isinstance(event, Done):
                    completion_tokens += sum(len(g.token_ids) for g in work.choices_of(event.generations))
                    for piece in finish_all(index, event.generations):
                        yield piece
            else:
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                for piece in usage_chunks(work, include_usage, head, completion_tokens):
                    yield piece
            yield sse("[DONE]")
        finally:
            work.collector.cancel()

    return StreamingResponse(generate(), media_type="text/event-stream", headers=SSE_HEADERS)
