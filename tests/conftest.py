"""Shared fixtures: tiny PolyLM-shaped models and a tokenizer trained on the project's embedded corpus."""

from __future__ import annotations

import warnings
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


def randomize(model: torch.nn.Module, seed: int = 0, gain: float = 1.0) -> None:
    """Give every parameter visible random values, so parity tests can fail.

    Matrices get std gain/sqrt(fan_in), LayerNorm scales 1 ± 0.2, biases std 0.2: large enough that every
    weight matters, tame enough that float rounding noise (which depends on memory alignment and threads)
    is not amplified past 1e-6 by the time it reaches the logits.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 2:
                param.copy_(noise * gain / param.shape[1] ** 0.5)
            elif ".ln_" in f".{name}" and name.endswith("weight"):
                param.copy_(1 + 0.2 * noise)
            else:
                param.copy_(0.2 * noise)


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


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A model trained by the tiny recipe (examples/data/curriculum.yaml, then examples/pretrain/tiny.yaml for its
    200 steps), exported: (model directory, prepared data directory). About 3 minutes on 2 cores."""
    from polylm.cli import main

    root = tmp_path_factory.mktemp("tiny-recipe")
    data, run = root / "data", root / "run"
    assert main(["data", "prepare", "--config", str(REPO / "examples/data/curriculum.yaml"), "--out", str(data)]) == 0
    pretrain = ["pretrain", "--config", str(REPO / "examples/pretrain/tiny.yaml"), "--out", str(run), f"data={data}"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="curriculum: source")  # small sources are reused, as expected
        assert main(pretrain) == 0
    checkpoint = sorted((run / "checkpoints").glob("step-*"))[-1]
    assert main(["export", str(checkpoint), "--out", str(root / "model")]) == 0
    return root / "model", data
