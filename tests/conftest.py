"""Shared fixtures: tiny PolyLM-shaped models and a tokenizer trained on the project's embedded corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polylm.config import ModelConfig
from polylm.model import PolyLM
from polylm.tokenizer import Tokenizer, TokenizerTrainingConfig, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EMBEDDED_CORPUS = REPO / "src" / "polylm" / "resources" / "corpus"

# PolyLM's shape rules (gelu_fast, eps 1e-5, 4x FFN, tied embeddings) at a size a test can afford.
TINY = ModelConfig(
    name="tiny-test", vocab_size=1000, max_position_embeddings=64, hidden_size=64, num_layers=3, num_heads=4
)


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> None:
    """Give every parameter (LayerNorms included) visible random values, so parity tests can fail."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)


def random_model(config: ModelConfig = TINY, seed: int = 0) -> PolyLM:
    model = PolyLM(config)
    randomize(model, seed)
    return model.eval()


@pytest.fixture(scope="session")
def corpus_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A 2000-piece BPE tokenizer trained on the embedded 18-language corpus."""
    out = tmp_path_factory.mktemp("tokenizer")
    inputs = sorted(EMBEDDED_CORPUS.glob("*.txt"))
    return train_tokenizer(inputs, out, TokenizerTrainingConfig(vocab_size=2000))
