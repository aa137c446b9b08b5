"""`/v1/chat/completions` of any OpenAI-compatible server, with bounded in-flight requests and retries.

Built on httpx2 (already required by huggingface_hub and openai) rather than the openai SDK: the SDK's own
retries would hide the per-cause counts, and it cannot retry an answer that is well-formed HTTP but useless.
Retried, with exponential backoff and jitter (Retry-After honoured): 429, 5xx, timeouts (a whole-request
deadline, so a server trickling bytes cannot hold a slot forever), dropped connections and truncated bodies,
bodies that are not a chat completion, and answers the caller cannot parse. Not retried: 401/403 (wrong key)
and other 4xx (wrong model, bad request), which stop the run with the server's message. The semaphore is
held only while a request is in flight, never while backing off.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx2

from polylm.errors import PolyLMError

T = TypeVar("T")


class EndpointError(PolyLMError):
    """The endpoint cannot be used: unreachable, key refused, model unknown, or failing past every retry."""


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    """Tries per request, the first included."""
    backoff: float = 1.0
    """Seconds before the second try; doubled for each further one, up to `max_backoff`."""
    max_backoff: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (0-based): half fixed, half random ("equal
        jitter"), so that clients failing together do not retry together; at least Retry-After."""
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        return max(wait, min(retry_after, self.max_backoff)) if retry_after is not None else wait


def api_base(endpoint: str) -> str:
    """`http://host:port`, `.../v1` or `.../v1/chat/completions` -> `.../v1`."""
    base = endpoint.rstrip("/")
    base = base.removesuffix("/chat/completions")
    return base if base.endswith("/v1") else f"{base}/v1"


def _retry_after(response: httpx2.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _completion(response: httpx2.Response) -> Completion | None:
    """The first choice of a chat completion body, or None when the body is not one."""
    try:
        choice = response.json()["choices"][0]
        text = choice["message"]["content"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError):
        return None
    return Completion(text, choice.get("finish_reason")) if isinstance(text, str) else None


def _refused(response: httpx2.Response, url: str) -> EndpointError:
    detail = " ".join(response.text.split())[:300]
    if response.status_code in (401, 403):
        return EndpointError(
            f"{url} refused the API key (HTTP {response.status_code}: {detail}); pass the variable holding the "
            "right key with --api-key-env"
        )
    return EndpointError(f"{url} answered HTTP {response.status_code}: {detail}")


class ChatClient:
    """Chat completions for one model, at most `concurrency` requests in flight."""

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if concurrency < 1:
            raise PolyLMError(f"--concurrency must be at least 1, got {concurrency}")
        self.base = api_base(endpoint)
        self.model = model
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._slots = asyncio.Semaphore(concurrency)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check(self) -> list[str]:
        """Fail early on an unreachable endpoint or a refused key: GET /v1/models (one try; a server without
        that route passes). The model ids it lists, if any."""
        url = f"{self.base}/models"
        try:
            response = await asyncio.wait_for(self._http.get(url), self.timeout)
        except (httpx2.TransportError, asyncio.TimeoutError) as exc:
            raise EndpointError(f"cannot reach {url}: {type(exc).__name__} {exc}".rstrip()) from None
        if response.status_code in (401, 403):
            raise _refused(response, url)
        try:
            return [str(model["id"]) for model in response.json()["data"]] if response.is_success else []
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            return []

    async def complete(
        self,
        prompt: str,
        parse: Callable[[Completion], T | None],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        on_attempt: Callable[[str | None], None] = lambda cause: None,
    ) -> T | None:
        """`parse` of the first answer it accepts. `on_attempt` is called after every try with the cause of its
        failure (None for success). None when every answer was unparsable; EndpointError when the endpoint
        failed every try or refused the request."""
        url = f"{self.base}/chat/completions"
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            **({"stop": stop} if stop else {}),
        }
        cause = None
        for attempt in range(self.retry.attempts):
            retry_after = None
            async with self._slots:
                try:
                    response = await asyncio.wait_for(self._http.post(url, json=body), self.timeout)
                except (httpx2.TimeoutException, asyncio.TimeoutError):
                    cause = "timeout"
                except httpx2.TransportError:
                    cause = "connection"
                else:
                    cause, retry_after, result = self._read(response, url, parse)
                    if cause is None:
                        on_attempt(None)
                        return result
            on_attempt(cause)
            if attempt + 1 < self.retry.attempts:
                await asyncio.sleep(self.retry.delay(attempt, retry_after))
        if cause == "unparsable":
            return None
        raise EndpointError(f"{url}: no usable answer after {self.retry.attempts} tries (last: {cause})")

    @staticmethod
    def _read(
        response: httpx2.Response, url: str, parse: Callable[[Completion], T | None]
    ) -> tuple[str | None, float | None, T | None]:
        """(failure cause or None, Retry-After, parsed result) of one HTTP answer."""
        status = response.status_code
        if status == 429:
            return "429", _retry_after(response), None
        if status >= 500:
            return "5xx", _retry_after(response), None
        if status >= 400 and status not in (408, 409):
            raise _refused(response, url)
        if status != 200:
            return "bad_response", None, None
        completion = _completion(response)
        if completion is None:
            return "bad_response", None, None
        result = parse(completion)
        return ("unparsable", None, None) if result is None else (None, None, result)
