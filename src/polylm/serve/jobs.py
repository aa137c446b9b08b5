"""A request's engine jobs seen from the event loop: their events handed over from the engine thread, their
submission, their cancellation when the client goes away, and engine errors turned into `APIError`s."""

from __future__ import annotations

import asyncio

from fastapi import Request

from polylm.errors import PolyLMError
from polylm.serve.engine import Done, Engine, EngineClosed, EngineTimeout, Event, Failed, Job, QueueFull, Scored
from polylm.serve.metrics import Metrics
from polylm.serve.protocol import APIError


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
