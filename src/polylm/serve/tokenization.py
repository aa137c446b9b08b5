"""vLLM's tokenizer endpoints, `/tokenizer_info`, `/tokenize` and `/detokenize`: lm-eval's local-completions finds
them and then tokenizes with the server's own SentencePiece model (the ids the completions endpoint uses) instead
of a Hugging Face tokenizer.

They have generation's limits, so that they are no way around them: the API key, the body size, at most
--max-queue of them at once (429 beyond), and at most the text one completions request may carry (--max-queue
prompts of --max-prompt-tokens tokens). Not one prompt's limit: lm-eval sends whole documents to `/tokenize` and
cuts the windows itself (as vLLM, whose `/tokenize` does not check the context either).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from polylm.serve.body import parse, read_json
from polylm.serve.jobs import MAX_PIECE_CHARS, too_long
from polylm.serve.protocol import (
    DetokenizeRequest,
    TokenizeRequest,
    api_responses,
    bad_parameter,
    json_request,
)
from polylm.serve.state import ServerState


class TokenizerInfo(BaseModel):
    """What lm-eval's remote tokenizer reads."""

    tokenizer_class: str
    eos_token: str
    bos_token: str
    unk_token: str
    pad_token: None
    add_bos_token: bool
    add_eos_token: bool
    vocab_size: int
    model_max_length: int


class TokenizeResponse(BaseModel):
    """The prompt's SentencePiece ids (a special token's name alone gives its id)."""

    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeResponse(BaseModel):
    """The ids decoded."""

    prompt: str


def add_tokenizer_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/tokenizer_info", responses=api_responses(TokenizerInfo, 401, 503))
    async def tokenizer_info(request: Request) -> JSONResponse:
        state.authorize(request)
        _, generator = state.ready()
        sp = generator.tokenizer.sp
        return JSONResponse(
            {
                "tokenizer_class": "SentencePiece",
                "eos_token": sp.id_to_piece(sp.eos_id()),
                "bos_token": sp.id_to_piece(sp.bos_id()),
                "unk_token": sp.id_to_piece(sp.unk_id()),
                "pad_token": None,
                "add_bos_token": False,
                "add_eos_token": False,
                "vocab_size": generator.tokenizer.vocab_size,
                "model_max_length": generator.model.config.max_position_embeddings,
            }
        )

    @app.post(
        "/tokenize",
        responses=api_responses(TokenizeResponse, 400, 401, 404, 413, 429, 503),
        openapi_extra=json_request(TokenizeRequest),
    )
    async def tokenize(request: Request) -> JSONResponse:
        state.authorize(request)
        body = parse(TokenizeRequest, await read_json(request, state.settings.max_body_bytes))
        _, generator = state.ready()
        state.check_model(body.model)
        limit = text_limit(state)
        if len(body.prompt) > MAX_PIECE_CHARS * limit:
            raise too_long("prompt", f"more than {limit}", limit, LIMIT_FLAGS)
        tokenizer = generator.tokenizer
        special = {tokenizer.sp.id_to_piece(i): i for i in (tokenizer.eos_id, tokenizer.bos_id) if i >= 0}
        if body.prompt in special:  # a special token by name, as a transformers tokenizer reads it
            tokens = [special[body.prompt]]
        else:
            with state.tokenizer_slot():
                tokens = await run_in_threadpool(tokenizer.encode, body.prompt)
        if len(tokens) > limit:
            raise too_long("prompt", str(len(tokens)), limit, LIMIT_FLAGS)
        context = generator.model.config.max_position_embeddings
        return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": context})

    @app.post(
        "/detokenize",
        responses=api_responses(DetokenizeResponse, 400, 401, 404, 413, 429, 503),
        openapi_extra=json_request(DetokenizeRequest),
    )
    async def detokenize(request: Request) -> JSONResponse:
        state.authorize(request)
        body = parse(DetokenizeRequest, await read_json(request, state.settings.max_body_bytes))
        _, generator = state.ready()
        state.check_model(body.model)
        limit = text_limit(state)
        if len(body.tokens) > limit:
            raise too_long("tokens", str(len(body.tokens)), limit, LIMIT_FLAGS)
        vocab = generator.tokenizer.vocab_size
        bad = next((t for t in body.tokens if t >= vocab), None)
        if bad is not None:
            raise bad_parameter("tokens", f"token id {bad} is outside the vocabulary of {vocab}")
        with state.tokenizer_slot():
            text = await run_in_threadpool(generator.tokenizer.decode, body.tokens)
        return JSONResponse({"prompt": text})


LIMIT_FLAGS = "--max-queue x --max-prompt-tokens"


def text_limit(state: ServerState) -> int:
    """Tokens one request may have tokenized or decoded: as many as one completions request may send."""
    return state.settings.max_queue * state.max_prompt_tokens
