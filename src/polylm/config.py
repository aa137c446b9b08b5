"""Typed model configuration and the named presets.

Shapes come from the official Megatron launch scripts and the released Hugging Face configs
(`../shared/spec/polylm-facts.md` §2): GPT-2 layout, FFN = 4·hidden, learned positions, 256K vocab.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from polylm.errors import PolyLMError

# Activations accepted in a Hugging Face GPT-2 config. All but "gelu" are the tanh approximation,
# which is what Megatron's fused bias-GELU computes and what PolyLM's converter writes ("gelu_fast").
TANH_GELU_NAMES = ("gelu_fast", "gelu_new", "gelu_pytorch_tanh")
ACTIVATIONS = (*TANH_GELU_NAMES, "gelu")


@dataclass
class ModelConfig:
    """Shape and numerics of a PolyLM (GPT-2 style) decoder."""

    name: str = "custom"
    vocab_size: int = 256000
    max_position_embeddings: int = 2048
    hidden_size: int = 2048
    num_layers: int = 24
    num_heads: int = 16
    ffn_hidden_size: int | None = None
    """Defaults to 4 × hidden_size, as in Megatron."""
    layer_norm_eps: float = 1e-5
    activation: str = "gelu_fast"
    init_std: float = 0.006
    """Megatron init: N(0, init_std); output projections get init_std / sqrt(2 · num_layers)."""
    bos_token_id: int = 1
    eos_token_id: int = 2
    """`</s>`, the end-of-document token PolyLM's demos stop on."""
    dtype: str = "float32"
    """Storage dtype of the weights when saved (`float32` or `bfloat16`)."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def ffn_size(self) -> int:
        return self.ffn_hidden_size or 4 * self.hidden_size

    def validate(self) -> None:
        """Reject shapes the model cannot be built with, naming the key at fault."""
        for key in ("vocab_size", "max_position_embeddings", "hidden_size", "num_layers", "num_heads"):
            if getattr(self, key) <= 0:
                raise PolyLMError(f"model config: {key} must be positive, got {getattr(self, key)}")
        if self.hidden_size % self.num_heads:
            raise PolyLMError(
                f"model config: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.activation not in ACTIVATIONS:
            raise PolyLMError(f"model config: activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise PolyLMError(f"model config: dtype {self.dtype!r} is not float32, bfloat16 or float16")

    def replace(self, **changes: object) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, ModelConfig] = {
    "polylm-1.7b": ModelConfig(name="polylm-1.7b", hidden_size=2048, num_layers=24, num_heads=16, dtype="bfloat16"),
    "polylm-13b": ModelConfig(name="polylm-13b", hidden_size=5120, num_layers=40, num_heads=40, dtype="bfloat16"),
    "tiny": ModelConfig(
        name="tiny", vocab_size=8000, max_position_embeddings=256, hidden_size=128, num_layers=4, num_heads=4
    ),
}


def preset(name: str) -> ModelConfig:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise PolyLMError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
