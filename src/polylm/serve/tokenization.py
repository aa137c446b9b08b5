"""vLLM's tokenizer endpoints, `/tokenizer_info`, `/tokenize` and `/detokenize`: lm-eval's local-completions finds
them and then tokenizes with the server's own SentencePiece model (the ids the completions endpoint uses) instead
of a Hugging Face tokenizer."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from polylm.serve.body import parse, read_json
from polylm.serve.protocol import DetokenizeRequest, TokenizeRequest, bad_parameter
from polylm.serve.state import ServerState


def add_tokenizer_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/tokenizer_info")
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

    @app.post("/tokenize")
    async def tokenize(request: Request) -> JSONResponse:
        state.authorize(request)
        body = parse(TokenizeRequest, await read_json(request, state.settings.max_body_bytes))
        _, generator = state.ready()
        state.check_model(body.model)
        tokenizer = generator.tokenizer
        special = {tokenizer.sp.id_to_piece(i): i for i in (tokenizer.eos_id, tokenizer.bos_id) if i >= 0}
        if body.prompt in special:  # a special token by name, as a transformers tokenizer reads it
            tokens = [special[body.prompt]]
        else:
            tokens = await run_in_threadpool(tokenizer.encode, body.prompt)
        limit = generator.model.config.max_position_embeddings
        return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": limit})

    @app.post("/detokenize")
    async def detokenize(request: Request) -> JSONResponse:
        state.authorize(request)
        body = parse(DetokenizeRequest, await read_json(request, state.settings.max_body_bytes))
        _, generator = state.ready()
        state.check_model(body.model)
        bad = next((t for t in body.tokens if t >= generator.tokenizer.vocab_size), None)
        if bad is not None:
            raise bad_parameter(
                "tokens", f"token id {bad} is outside the vocabulary of {generator.tokenizer.vocab_size}"
            )
        return JSONResponse({"prompt": generator.tokenizer.decode(body.tokens)})
