"""The OpenAI wire format: request models (pydantic, strict types), error bodies, and the mapping to
`GenerationConfig`.

Every bad request becomes an `APIError` with an HTTP status in the 4xx range and OpenAI's body,
`{"error": {"message", "type", "param", "code"}}`, where `param` names the offending field. Unknown fields are
ignored, as vLLM does, so that clients sending newer OpenAI options keep working.

The request models are also the OpenAPI document's request bodies (`/openapi.json`). Rules that are checked in
code rather than by pydantic, so that their error messages can say more (stop strings, unsupported options,
templates), are written into the fields' JSON schema with `WithJsonSchema`, so that the document refuses what the
server refuses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from polylm.generate.config import GenerationConfig
from polylm.templates import TEMPLATES

MAX_STOP_STRINGS = 16
MAX_LOGPROBS = 20
MAX_N = 64
MIN_TEMPERATURE = 1e-5
"""Temperatures below this decode greedily (as vLLM does): dividing logits by 1e-300 overflows to inf and NaN."""
SEED_RANGE = (-(2**63), 2**64 - 1)
"""What `torch.Generator.manual_seed` accepts; a larger seed made it raise (a 500, found by Schemathesis)."""


class APIError(Exception):
    """An error response: HTTP status plus OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class ErrorDetail(BaseModel):
    """`APIError.body()["error"]`, for the OpenAPI document."""

    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error or server_error")
    param: str | None = Field(description="the offending request field, dotted (`messages.0.role`)")
    code: str | None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx body, for the OpenAPI document."""

    error: ErrorDetail


def bad_parameter(param: str, message: str, code: str = "invalid_parameter") -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code=code)


# ---- the OpenAPI document's pieces (the routes read their bodies themselves, so FastAPI cannot see them) --------

DOCUMENTED: dict[str, type[BaseModel]] = {}
"""The models `/openapi.json` refers to; `app.openapi_document` writes their schemas into its components."""

ERROR_STATUSES = {
    400: "malformed JSON, a wrong type or value, an unsupported option, a prompt over the server's limits",
    401: "missing or wrong API key (only when the server has one); `WWW-Authenticate: Bearer`",
    404: "a `model` other than the served one",
    413: "a body larger than the server's limit, refused before it is read in full",
    429: "the server is busy: --max-queue requests are waiting (or tokenizing) already; `Retry-After: 1`",
    503: "the model is loading or failed to load, or the request timed out; `Retry-After: 1`",
}


def schema_ref(model: type[BaseModel]) -> dict:
    """A `$ref` to `model` in the document's components (and `model` noted for them)."""
    DOCUMENTED.setdefault(model.__name__, model)
    if DOCUMENTED[model.__name__] is not model:
        raise TypeError(f"two documented models are called {model.__name__}")
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def json_request(model: type[BaseModel]) -> dict:
    """A route's `openapi_extra`: its JSON request body."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema_ref(model)}}}}


def event_stream(chunk: type[BaseModel]) -> dict:
    """A `text/event-stream` response: `data:` events holding a `chunk` (or an error body when the request fails
    after the stream began), then `data: [DONE]`. OpenAPI 3.2's `itemSchema`, as FastAPI writes it."""
    data = {
        "contentMediaType": "application/json",
        "contentSchema": {"anyOf": [schema_ref(chunk), schema_ref(ErrorBody)]},
    }
    item = {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [{"const": "[DONE]"}, data]}}}
    return {"text/event-stream": {"itemSchema": item}}


def json_response(model: type[BaseModel], description: str | None = None) -> dict:
    return {"description": description or model.__doc__, "content": {"application/json": {"schema": schema_ref(model)}}}


def api_responses(ok: type[BaseModel], *errors: int, stream: type[BaseModel] | None = None) -> dict:
    """A route's `responses`: 200 with an `ok` body (or `stream`'s events when the request asks for a stream) and
    OpenAI's error body for each status in `errors`."""
    success = json_response(ok)
    if stream is not None:
        success["description"] += f" With stream: true, server-sent events: {stream.__name__}s, then [DONE]."
        success["content"].update(event_stream(stream))
    return {200: success, **{status: json_response(ErrorBody, ERROR_STATUSES[status]) for status in errors}}


NonNegativeInt = Annotated[int, Field(ge=0)]
TokenIds = Annotated[list[NonNegativeInt], Field(min_length=1)]

_NON_EMPTY_STRING = {"type": "string", "minLength": 1}
_TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
_NULL = {"type": "null"}


def _documented(*alternatives: dict) -> WithJsonSchema:
    """The JSON schema of a field whose rules are checked in code: these alternatives, or null."""
    return WithJsonSchema({"anyOf": [*alternatives, _NULL]})


# Only the neutral value is accepted (`_check_unsupported` refuses the rest with a 400 that says why).
_NEUTRAL_ONLY = _documented({"type": "number", "const": 0})


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields completions and chat share, OpenAI's first, then polylm's (vLLM-style) extras."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    model: str | None = Field(None, description="the served model's name (`GET /v1/models`); any other is a 404")
    temperature: float | None = Field(
        None, ge=0.0, le=100.0, description=f"default 1; 0 (or below {MIN_TEMPERATURE}) decodes greedily"
    )
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="nucleus sampling, default 1")
    n: int = Field(
        1, ge=1, le=MAX_N, description="choices per prompt; sampled choices take a row each (at most --max-batch)"
    )
    stop: Annotated[
        str | list[str] | None,
        _documented(_NON_EMPTY_STRING, {"type": "array", "maxItems": MAX_STOP_STRINGS, "items": _NON_EMPTY_STRING}),
    ] = Field(None, description="the text ends before the first of these")
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1], description="a private sampling generator")
    stream: bool = Field(False, description="server-sent events (text/event-stream), ending with `data: [DONE]`")
    stream_options: StreamOptions | None = Field(None, description="only with stream: true")
    presence_penalty: Annotated[float | None, _NEUTRAL_ONLY] = Field(None, description="unsupported: 0 or null")
    frequency_penalty: Annotated[float | None, _NEUTRAL_ONLY] = Field(None, description="unsupported: 0 or null")
    logit_bias: Annotated[dict[str, float] | None, _documented({"type": "object", "maxProperties": 0})] = Field(
        None, description="unsupported: {} or null"
    )
    user: str | None = None
    # extras
    top_k: int | None = Field(None, ge=-1, description="keep the k most likely tokens; 0 or -1: off")
    repetition_penalty: float | None = Field(None, ge=0.01, le=100.0, description="CTRL's penalty, default 1")
    no_repeat_ngram_size: int = Field(0, ge=0, le=1024, description="never repeat an n-gram of this size; 0: off")
    use_beam_search: bool = False
    num_beams: int | None = Field(None, ge=1, le=MAX_N, description="beam width; at most --max-batch")
    best_of: int | None = Field(None, ge=1, le=MAX_N, description="the beam width with use_beam_search, else n")
    length_penalty: float = Field(1.0, ge=-10.0, le=10.0, description="beam score = sum(logprob) / length**this")
    early_stopping: bool | Literal["never"] = False
    ignore_eos: bool = False

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise bad_parameter("stop", f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
        if any(not s for s in stops):
            raise bad_parameter("stop", "stop strings must not be empty")
        return stops

    def _check_unsupported(self) -> None:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise bad_parameter(name, "is not supported by this server (use repetition_penalty)", "unsupported")
        if self.logit_bias:
            raise bad_parameter("logit_bias", "is not supported by this server", "unsupported")
        if self.stream_options is not None and not self.stream:
            raise bad_parameter("stream_options", "is only allowed when stream is true")

    def beams(self) -> int:
        """The beam width, 1 for greedy/sampling."""
        if self.num_beams is not None and self.num_beams > 1:
            beams = self.num_beams
        elif self.use_beam_search:
            beams = self.num_beams or self.best_of or max(4, self.n)
        else:
            beams = 1
        if self.best_of is not None and self.best_of != self.n and beams == 1:
            raise bad_parameter("best_of", "is only supported with use_beam_search (as the beam width)", "unsupported")
        if beams > 1 and self.n > beams:
            raise bad_parameter("n", f"cannot exceed the beam width ({beams}) with beam search")
        return beams

    def generation_config(self, max_new_tokens: int, eos_token_id: int) -> tuple[GenerationConfig, int]:
        """The decoding config and the number of rows to decode (samples; 1 for greedy and beam search)."""
        self._check_unsupported()
        beams = self.beams()
        temperature = 1.0 if self.temperature is None else self.temperature
        do_sample = beams == 1 and temperature >= MIN_TEMPERATURE
        top_k = self.top_k if self.top_k is not None and self.top_k > 0 else 0
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_k=top_k,
            top_p=1.0 if self.top_p is None else self.top_p,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            num_beams=beams,
            length_penalty=self.length_penalty,
            early_stopping=self.early_stopping,
            num_return_sequences=self.n if beams > 1 else 1,
            eos_token_id=None if self.ignore_eos else eos_token_id,
            stop=self.stop_strings(),
            seed=self.seed,
        )
        rows = self.n if do_sample else 1
        return config, rows


class CompletionRequest(_Sampling):
    """`POST /v1/completions`."""

    prompt: Annotated[
        str | list[str] | TokenIds | list[TokenIds],
        WithJsonSchema(
            {
                "anyOf": [
                    _NON_EMPTY_STRING,
                    {"type": "array", "minItems": 1, "items": _NON_EMPTY_STRING},
                    _TOKEN_IDS,
                    {"type": "array", "minItems": 1, "items": _TOKEN_IDS},
                ]
            }
        ),
    ] = Field(
        description="a string, a list of strings, a list of token ids or a list of such lists; at most --max-queue "
        "prompts of --max-prompt-tokens tokens each, token ids below the vocabulary size"
    )
    max_tokens: int | None = Field(16, ge=0, description="cut at the model's context; 0 with echo scores the prompt")
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="alternatives per token (not with beams)")
    suffix: Annotated[str | None, _documented({"type": "string", "maxLength": 0})] = Field(
        None, description="unsupported: empty or null"
    )

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list: strings or token-id lists."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if self.prompt and isinstance(self.prompt[0], int):
            return [list(self.prompt)]
        if not self.prompt:
            raise bad_parameter("prompt", "must not be an empty list")
        return list(self.prompt)

    def _check_unsupported(self) -> None:
        super()._check_unsupported()
        if self.suffix:
            raise bad_parameter("suffix", "is not supported by this server", "unsupported")


class TextPart(BaseModel):
    """A chat message's content part."""

    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    """A chat message; `developer` is read as `system`."""

    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Sampling):
    """`POST /v1/chat/completions`."""

    messages: list[Message] = Field(min_length=1, description="the conversation; it must end with a user message")
    max_tokens: int | None = Field(None, ge=0, description="default: the rest of the model's context")
    max_completion_tokens: int | None = Field(None, ge=0, description="wins over max_tokens")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, description="needs logprobs: true")
    template: Annotated[str | None, _documented({"enum": list(TEMPLATES)})] = Field(
        None, description="polylm extra: the prompt format; default the server's --template"
    )

    def template_name(self, default: str) -> str:
        if self.template is None:
            return default
        if self.template not in TEMPLATES:
            raise bad_parameter("template", f"must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        return self.template

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def logprob_alternatives(self) -> int | None:
        if self.top_logprobs is not None and not self.logprobs:
            raise bad_parameter("top_logprobs", "needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else None


class TokenizeRequest(BaseModel):
    """vLLM's `/tokenize` body (what lm-eval's remote tokenizer sends)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    prompt: str = Field(description="at most --max-queue x --max-prompt-tokens tokens (a completions request's most)")
    add_special_tokens: bool = False
    model: str | None = None


class DetokenizeRequest(BaseModel):
    """vLLM's `/detokenize` body."""

    model_config = ConfigDict(extra="ignore", strict=True)
    tokens: list[NonNegativeInt] = Field(
        description="ids below the vocabulary size; at most --max-queue x --max-prompt-tokens of them"
    )
    model: str | None = None


# What a value of each union-typed field may be, for error messages that a person can act on.
_EXPECTED = {
    "prompt": "a string, a list of strings, a list of token ids or a list of lists of token ids",
    "stop": "a string or a list of strings",
    "early_stopping": "true, false or 'never'",
    "content": "a string or a list of text parts",
    "messages": "a list of {role, content} objects",
}


def validation_error(exc: ValidationError) -> APIError:
    """The first problem pydantic found, as a 400 naming the parameter."""
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    if not loc:
        return APIError(400, "request body must be a JSON object", code="invalid_body")
    names = [part for part in loc if not part.startswith(("list[", "str", "int", "bool", "literal[", "dict["))]
    param = ".".join(names) or loc[0]
    field_name = next((part for part in reversed(names) if not part.isdigit()), param)
    if error["type"] == "missing":
        return APIError(400, f"{param}: missing required parameter", param=param, code="missing_parameter")
    if field_name in _EXPECTED and len(loc) > len(names):
        return bad_parameter(param, f"must be {_EXPECTED[field_name]}")
    message = error["msg"][0].lower() + error["msg"][1:]
    return bad_parameter(param, f"{message} (got {short_repr(error.get('input'))})")


def short_repr(value: Any) -> str:
    """A value quoted in an error message, cut to 60 characters: the client sent it, it may be huge."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
