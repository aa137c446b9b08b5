"""Prompts of different lengths as one left-padded batch, the layout transformers generates from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from polylm.errors import PolyLMError
from polylm.generate.config import GenerationConfig
from polylm.model import PolyLM

# Called with a row's generated token ids after each step; True ends that row (stop strings).
StopCriterion = Callable[[list[int]], bool]


@dataclass
class Generation:
    """One generated continuation: its tokens (eos included when produced) and why it ended."""

    token_ids: list[int]
    finish_reason: str
    """"stop" (an eos token or a stop criterion) or "length" (max_new_tokens / the model's context)."""
    score: float | None = None
    """Beam search: the length-normalised log-probability it was ranked by."""


@dataclass
class PromptBatch:
    input_ids: torch.Tensor
    """(rows, length), left-padded with the pad id."""
    pad_lengths: torch.Tensor
    """(rows,) how many pad tokens each row starts with."""
    max_new_tokens: int
    """The requested number, cut where the model's context ends."""

    @property
    def padded(self) -> bool:
        return bool(self.pad_lengths.any())

    def attention_mask(self, generated: int) -> torch.Tensor | None:
        """1 for real tokens over prompt + `generated` positions; None when no row is padded."""
        if not self.padded:
            return None
        length = self.input_ids.shape[1]
        positions = torch.arange(length + generated, device=self.input_ids.device)
        return (positions[None, :] >= self.pad_lengths[:, None]).long()

    def unpadded_rows(self) -> list[list[int]]:
        return [row[pad:] for row, pad in zip(self.input_ids.tolist(), self.pad_lengths.tolist(), strict=True)]

    def prompt_positions(self) -> torch.Tensor:
        positions = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        return (positions[None, :] - self.pad_lengths[:, None]).clamp(min=0)

    def step_positions(self, generated: int) -> torch.Tensor:
        """(rows, 1) position of the token fed after `generated` new tokens."""
        return (self.input_ids.shape[1] - self.pad_lengths + generated - 1)[:, None]


def make_batch(
    model: PolyLM, prompts: Sequence[Sequence[int]], config: GenerationConfig, repeat: int = 1
) -> PromptBatch:
    """Left-pad `prompts` (each repeated `repeat` times, consecutively) and work out the token budget."""
    if not prompts:
        raise PolyLMError("no prompts to generate from")
    for index, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise PolyLMError(f"prompt {index} encodes to no tokens")
    length = max(len(p) for p in prompts)
    context = model.config.max_position_embeddings
    if length >= context:
        raise PolyLMError(f"prompt of {length} tokens does not fit the model's context of {context} tokens")
    max_new_tokens = min(config.new_tokens_for(length), context - length)
    rows = [prompt for prompt in prompts for _ in range(repeat)]
    device = model.device
    input_ids = torch.full((len(rows), length), config.pad_id, dtype=torch.long, device=device)
    for row, prompt in enumerate(rows):
        input_ids[row, length - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
    pad_lengths = torch.tensor([length - len(p) for p in rows], device=device)
    return PromptBatch(input_ids, pad_lengths, max_new_tokens)
