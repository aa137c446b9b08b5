"""`POST /v1/chat/completions`: messages rendered with a prompt template, then answered whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from polylm.errors import PolyLMError
from polylm.serve.body import parse, read_json
from polylm.serve.engine import Done, Failed, Step
from polylm.serve.jobs import Completion, failure
from polylm.serve.protocol import ChatCompletionRequest, api_responses, bad_parameter, json_request
from polylm.serve.responses import ChatCompletionChunk, ChatCompletionResponse, ChatLogprobs, Head, final_text
from polylm.serve.state import ServerState
from polylm.serve.streaming import SSE_HEADERS, ChoiceStream, events, first_event, sse, usage_chunks
from polylm.templates import render_messages


def add_chat_route(app: FastAPI, state: ServerState) -> None:
    @app.post(
        "/v1/chat/completions",
        responses=api_responses(ChatCompletionResponse, 400, 401, 404, 413, 429, 503, stream=ChatCompletionChunk),
        openapi_extra=json_request(ChatCompletionRequest),
    )
    async def chat_completions(request: Request) -> Response:
        state.authorize(request)
        body = parse(ChatCompletionRequest, await read_json(request, state.settings.max_body_bytes))
        state.ready()
        state.check_model(body.model)
        template = body.template_name(state.settings.template)
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
        head = Head.new("chatcmpl", "chat.completion", state.model_name)
        return JSONResponse(head.body(choices, work.record_usage(completion_tokens)))


async def stream_chat(work: Completion, body: ChatCompletionRequest, request: Request) -> StreamingResponse:
    first = await first_event(work, request)
    state = work.state
    head = Head.new("chatcmpl", "chat.completion.chunk", state.model_name)

    def chunk(index: int, delta: dict, finish_reason: str | None, logprobs: dict | None = None) -> bytes:
        return sse(head.body([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]))

    streams = {j: ChoiceStream(work, ChatLogprobs(work.tokenizer) if body.logprobs else None) for j in range(work.n)}

    async def generate() -> AsyncIterator[bytes]:
        completion_tokens = 0
        try:
            for j in range(work.n):
                yield chunk(j, {"role": "assistant", "content": ""}, None)
            async for _, event in events(work, first):
                if isinstance(event, Failed):
                    yield sse(failure(event.error, state.metrics).body())
                    work.collector.cancel()
                    break
                if isinstance(event, Step):
                    work.note_first_token()
                    for update in event.rows:
                        for j in [update.row] if work.rows > 1 else range(work.n):
                            finished = update.finish_reason is not None
                            delta, logprobs = streams[j].step(update.token, update.logprob, finished)
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
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                for piece in usage_chunks(work, include_usage, head, completion_tokens):
                    yield piece
            yield sse("[DONE]")
        finally:
            work.collector.cancel()

    return StreamingResponse(generate(), media_type="text/event-stream", headers=SSE_HEADERS)
