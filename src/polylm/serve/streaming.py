"""Server-sent events: the framing, and what the completions and chat streams share (the wait for the first
event, the events after it, each choice's state)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import Request

from polylm.serve.engine import Event, Failed, TokenLogprob
from polylm.serve.jobs import Completion, failure, watch_disconnect
from polylm.serve.protocol import APIError
from polylm.serve.responses import Head, StreamText

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def usage_chunks(work: Completion, include_usage: bool, head: Head, completion_tokens: int) -> list[bytes]:
    """Record the stream's usage; the usage chunk when the client asked for it (`stream_options.include_usage`)."""
    usage = work.record_usage(completion_tokens)
    return [sse(head.body([], usage))] if include_usage else []


async def first_event(work: Completion, request: Request) -> tuple[int, Event] | None:
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


async def events(work: Completion, first: tuple[int, Event] | None) -> AsyncIterator[tuple[int, Event]]:
    if first is not None:
        yield first
    while work.collector.open:
        yield await work.collector.next()


class ChoiceStream:
    """Per choice: streamed text and log-probabilities so far."""

    def __init__(self, work: Completion, logprobs_builder) -> None:
        self.text = StreamText(work.tokenizer, work.config.stop)
        self.logprobs = logprobs_builder
        self.sent_logprobs = 0
        self.finished = False

    def step(self, token: int, logprob: TokenLogprob | None, finished: bool) -> tuple[str, dict | None]:
        """The text this token adds (possibly empty: a stop string may be forming) and its not yet sent
        log-probabilities (None when the request asked for none)."""
        delta = self.text.add([token], finished=finished)
        if self.logprobs is None:
            return delta, None
        self.logprobs.add(token, logprob)
        logprobs = self.logprobs.body(self.sent_logprobs)
        self.sent_logprobs = len(self.logprobs)
        return delta, logprobs
