"""Response bodies: completions and chat completions, whole or as stream chunks, with log-probabilities.

Texts follow `TextGenerator`: a continuation is `decode(tokens)` cut before the first stop string, and a stream
holds back a half-decoded character or a possible stop-string start until it is decided, so the concatenated
stream equals the non-streamed text.

The pydantic models at the end describe these bodies in the OpenAPI document (the builders above write plain
dicts); the fuzz test checks every answer against them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, Field

from polylm.generate.text import _cut_at_stop, _withheld
from polylm.serve.engine import TokenLogprob
from polylm.tokenizer import Tokenizer


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Head:
    """id, object, created and model: the fields that open every response body and every stream chunk."""

    id: str
    object: str
    created: int
    model: str

    @classmethod
    def new(cls, id_prefix: str, object: str, model: str) -> Head:
        return cls(new_id(id_prefix), object, now(), model)

    def body(self, choices: list[dict], usage: dict | None = None) -> dict:
        return {**asdict(self), "choices": choices, **({"usage": usage} if usage is not None else {})}


class TokenTexts:
    """The text each token adds to the decoded string, one token at a time (byte-fallback pieces are held until
    their character is complete, then the whole character goes to the last of them)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.sp = tokenizer.sp
        self.pending = bytearray()
        self.started = False

    def feed(self, token: int) -> str:
        sp = self.sp
        if token < 0 or token >= sp.get_piece_size():
            return ""
        if sp.is_byte(token):
            self.pending.append(int(sp.id_to_piece(token)[3:5], 16))
            try:
                text = self.pending.decode("utf-8")
            except UnicodeDecodeError:
                if len(self.pending) < 4:
                    return ""
                text = self.pending.decode("utf-8", errors="replace")
            self.pending.clear()
        elif sp.is_control(token) or sp.is_unused(token):
            return ""
        elif sp.is_unknown(token):
            text = " \u2047 "
        else:
            text = sp.id_to_piece(token).replace("\u2581", " ")
        if not self.started and text:
            self.started = True
            text = text.removeprefix(" ")  # SentencePiece drops the dummy-prefix space of the first piece
        return text


def piece_text(tokenizer: Tokenizer, token: int) -> str:
    """A token on its own, for the alternatives in `top_logprobs`."""
    sp = tokenizer.sp
    if sp.is_byte(token):
        value = int(sp.id_to_piece(token)[3:5], 16)
        return chr(value) if value < 0x80 else sp.id_to_piece(token)
    if sp.is_control(token):
        return sp.id_to_piece(token)
    return sp.id_to_piece(token).replace("\u2581", " ")


class CompletionLogprobs:
    """OpenAI's completions `logprobs` object, built token by token."""

    def __init__(self, tokenizer: Tokenizer, offset: int = 0) -> None:
        self.tokenizer = tokenizer
        self.texts = TokenTexts(tokenizer)
        self.offset = offset
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float] | None] = []
        self.text_offset: list[int] = []

    def add(self, token: int, entry: TokenLogprob | None) -> None:
        text = self.texts.feed(token)
        self.tokens.append(text)
        self.text_offset.append(self.offset)
        self.offset += len(text)
        if entry is None:
            self.token_logprobs.append(None)
            self.top_logprobs.append(None)
            return
        self.token_logprobs.append(entry.logprob)
        top = {piece_text(self.tokenizer, t): lp for t, lp in entry.top}
        top.setdefault(text, entry.logprob)
        self.top_logprobs.append(top)

    def __len__(self) -> int:
        return len(self.tokens)

    def restart(self, offset: int) -> None:
        """The generated tokens follow the echoed prompt: a new decoded text that starts at `offset`."""
        self.texts = TokenTexts(self.tokenizer)
        self.offset = offset

    def body(self, start: int = 0) -> dict:
        """Entries from index `start` on (a stream sends each token once)."""
        return {
            "tokens": self.tokens[start:],
            "token_logprobs": self.token_logprobs[start:],
            "top_logprobs": self.top_logprobs[start:],
            "text_offset": self.text_offset[start:],
        }


class ChatLogprobs:
    """OpenAI's chat `logprobs.content` list, built token by token."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.texts = TokenTexts(tokenizer)
        self.content: list[dict] = []

    def add(self, token: int, entry: TokenLogprob | None) -> None:
        text = self.texts.feed(token)
        if entry is None:
            return
        top = [
            {
                "token": piece_text(self.tokenizer, t),
                "logprob": lp,
                "bytes": list(piece_text(self.tokenizer, t).encode()),
            }
            for t, lp in entry.top
        ]
        self.content.append(
            {"token": text, "logprob": entry.logprob, "bytes": list(text.encode()), "top_logprobs": top}
        )

    def __len__(self) -> int:
        return len(self.content)

    def body(self, start: int = 0) -> dict:
        return {"content": self.content[start:]}


class StreamText:
    """One choice's streamed text: what may be shown after each new token."""

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str]) -> None:
        self.tokenizer, self.stops = tokenizer, list(stops)
        self.tokens: list[int] = []
        self.shown = 0

    def add(self, tokens: Sequence[int], finished: bool) -> str:
        self.tokens.extend(tokens)
        text = _cut_at_stop(self.tokenizer.decode(self.tokens), self.stops)
        if not finished:
            text = text.rstrip("\ufffd")
            text = text[: len(text) - _withheld(text, self.stops)]
        if len(text) <= self.shown:
            return ""
        delta, self.shown = text[self.shown :], len(text)
        return delta


def final_text(tokenizer: Tokenizer, tokens: Sequence[int], stops: Sequence[str]) -> str:
    return _cut_at_stop(tokenizer.decode(list(tokens)), stops)


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# ---- the OpenAPI document's response bodies --------------------------------------------------------------------

FinishReason = Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobsBody(BaseModel):
    """`CompletionLogprobs.body()`: one entry per token; the echoed prompt's first token has null log-probabilities."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobsBody | None
    finish_reason: FinishReason


class CompletionResponse(BaseModel):
    """The completion."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobsBody | None
    finish_reason: FinishReason | None


class CompletionChunk(BaseModel):
    """One `data:` event of a completions stream; the last one before `[DONE]` has no choices and the usage when
    `stream_options.include_usage` is true."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobsBody(BaseModel):
    content: list[ChatTokenLogprob]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobsBody | None
    finish_reason: FinishReason


class ChatCompletionResponse(BaseModel):
    """The assistant's answer."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = Field(None, description="in each choice's first chunk")
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobsBody | None
    finish_reason: FinishReason | None


class ChatCompletionChunk(BaseModel):
    """One `data:` event of a chat stream (as `CompletionChunk`)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
