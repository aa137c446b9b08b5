"""Reading a request body: size-capped while it streams in, strict JSON, validated into a request model; every
failure is a 4xx `APIError`.

The size is checked from Content-Length before anything is read, then again as each chunk arrives (a chunked body
has no Content-Length), so an oversize body is refused with 413 without being held in memory or parsed.
"""

from __future__ import annotations

import json
import re

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from polylm.serve.jobs import ClientDisconnected
from polylm.serve.protocol import APIError, validation_error


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
        value = json.loads(raw, parse_float=_number, parse_constant=_reject_constant)
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a ValueError too: first
        message = "request body has a lone UTF-16 surrogate escape (\\ud800-\\udfff) in a string; send valid Unicode"
        raise APIError(400, message, code="invalid_json") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"request body is not valid JSON ({exc})", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "request body is nested too deeply", code="invalid_json") from None
    return value


# `\ud800`-style escapes: JSON allows them, and json.loads turns an unpaired one into a str that no UTF-8 encoder
# (SentencePiece's included) takes: a 500 on /v1/completions, /v1/chat/completions and /tokenize before this check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _number(text: str) -> float | int:
    """JSON has one number type: `2.0` is the integer 2, as JSON Schema's `integer` (the OpenAPI document) says.
    Integer fields refused it (Schemathesis's valid requests got 400 for `"n": 2.0`); float fields take ints."""
    value = float(text)
    return int(value) if value.is_integer() else value


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def parse(model: type[BaseModel], body: object):
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except RecursionError:
        raise APIError(400, "request body is nested too deeply", code="invalid_json") from None
