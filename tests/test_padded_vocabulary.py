"""Padded vocabularies (issue L.4): an embedding with more rows than the tokenizer has pieces, as Megatron writes
(a multiple of 128 x TP), loads, generates like transformers, serves and exports; only a tokenizer larger than the
embedding is refused, in one line."""

from __future__ import annotations

import pytest
import torch

from conftest import SHARED_DATA, randomize
from polylm.cli import main
from polylm.config import ModelConfig
from polylm.generate import GenerationConfig, generate
from polylm.hf_checkpoint import load_model, save_model
from polylm.model import PolyLM
from polylm.serve import ServeSettings, create_app
from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer
from serve_support import ServerThread, request

LEIPZIG = SHARED_DATA / "corpora" / "leipzig_sentences"
pytestmark = pytest.mark.skipif(not LEIPZIG.is_dir(), reason="../shared/data/corpora is absent")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """5,000 pieces, as the issue asks (the embedded corpus is too small for that many)."""
    files = sorted(LEIPZIG.glob("??.txt"))
    return train_tokenizer(files, tmp_path_factory.mktemp("tok5000"), TokenizerTrainingConfig(vocab_size=5000))


def _model_dir(tmp_path, tokenizer, vocab_size: int):
    config = ModelConfig(name="padded", vocab_size=vocab_size, max_position_embeddings=64, hidden_size=64,
                         num_layers=2, num_heads=4)  # fmt: skip
    model = PolyLM(config)
    randomize(model, seed=5)
    with torch.no_grad():  # the padded rows as a Megatron checkpoint may leave them: never produced, any value
        model.wte.weight[tokenizer.vocab_size :] = 0.0
    return save_model(model.eval(), tmp_path / f"model-{vocab_size}", tokenizer)


def test_5000_pieces_in_5120_rows_load_generate_serve_and_export(tmp_path, tokenizer):
    from transformers import GPT2LMHeadModel

    assert tokenizer.vocab_size == 5000
    model_dir = _model_dir(tmp_path, tokenizer, 5120)
    model = load_model(model_dir)
    assert model.wte.weight.shape[0] == 5120
    prompt = tokenizer.encode("Die Würde des Menschen ist unantastbar.")
    ours = generate(model, [prompt], GenerationConfig(max_new_tokens=12, eos_token_id=None))[0][0].token_ids
    reference = GPT2LMHeadModel.from_pretrained(model_dir).eval()
    theirs = reference.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                                attention_mask=torch.ones(1, len(prompt), dtype=torch.long))  # fmt: skip
    assert ours == theirs[0, len(prompt) :].tolist()

    settings = ServeSettings(model=str(model_dir), served_model_name="padded", template="plain", max_batch=2)
    with ServerThread(create_app(settings)) as running:
        running.wait_ready()
        status, body = request(running.url, "POST", "/v1/completions",
                               {"model": "padded", "prompt": "Bonjour", "max_tokens": 5})  # fmt: skip
    assert status == 200 and body["usage"]["completion_tokens"] > 0, body

    gguf = tmp_path / "padded.gguf"
    assert main(["export", str(model_dir), "--format", "gguf", "--outtype", "f32", "--out", str(gguf)]) == 0
    from gguf import GGUFReader

    tokens = GGUFReader(gguf).fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 5120  # 5,000 pieces and 120 [PADn] placeholders, one per row


def test_tokenizer_larger_than_the_embedding_is_one_line(tmp_path, tokenizer, capsys):
    model_dir = _model_dir(tmp_path, tokenizer, 5120)
    config = (model_dir / "config.json").read_text().replace('"vocab_size": 5120', '"vocab_size": 4096')
    (model_dir / "config.json").write_text(config)
    assert main(["generate", "--model", str(model_dir), "--prompt", "x", "--max-new-tokens", "1"]) == 1
    error = capsys.readouterr().err.strip()
    assert "tokenizer has 5000 pieces" in error and "only 4096" in error and len(error.splitlines()) == 1, error
