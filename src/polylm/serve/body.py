"""Reading a request body: size-capped while it streams in, strict JSON, validated into a request model; every
failure is a 4xx `APIError`."""

from __future__ import annotations

import json

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
