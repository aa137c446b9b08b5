"""The OpenAI wire format: request models (pydantic, strict types), error bodies, and the mapping to
`GenerationConfig`.

Every bad request becomes an `APIError` with an HTTP status in the 4xx range and OpenAI's body,
`{"error": {"message", "type", "param", "code"}}`, where `param` names the offending field. Unknown fields are
ignored, as vLLM does, so that clients sending newer OpenAI options keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polylm.generate.config import GenerationConfig
from polylm.templates import TEMPLATES

MAX_STOP_STRINGS = 16
MAX_LOGPROBS = 20
MAX_N = 64


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


def bad_parameter(param: str, message: str, code: str = "invalid_parameter") -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code=code)


NonNegativeInt = Annotated[int, Field(ge=0)]
TokenIds = Annotated[list[NonNegativeInt], Field(min_length=1)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields completions and chat share, OpenAI's first, then polylm's (vLLM-style) extras."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    model: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=100.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # extras
    top_k: int | None = Field(None, ge=-1)
    repetition_penalty: float | None = Field(None, gt=0.0)
    use_beam_search: bool = False
    num_beams: int | None = Field(None, ge=1, le=MAX_N)
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    length_penalty: float = 1.0
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
        do_sample = beams == 1 and temperature > 0.0
        top_k = self.top_k if self.top_k is not None and self.top_k > 0 else 0
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_k=top_k,
            top_p=1.0 if self.top_p is None else self.top_p,
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
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
    prompt: str | list[str] | TokenIds | list[TokenIds]
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    suffix: str | None = None

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
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
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
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    template: str | None = None
    """polylm extra: the prompt format (`chat`, `multialpaca` or `plain`); default the server's --template."""

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
    prompt: str
    add_special_tokens: bool = False
    model: str | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    tokens: list[NonNegativeInt]
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
    return bad_parameter(param, f"{message} (got {_short(error.get('input'))})")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
