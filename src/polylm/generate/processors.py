"""Next-token score processing, written to give transformers' numbers exactly.

Greedy and sampling process raw logits; beam search processes log-probabilities (transformers'
order). Sampling warpers (temperature → top-k → top-p) run after the penalties, as in transformers.
"""

from __future__ import annotations

import torch

from polylm.generate.config import GenerationConfig


def repetition_penalty(scores: torch.Tensor, sequences: torch.Tensor, pad_lengths: torch.Tensor, penalty: float):
    """CTRL's penalty on every token already in the row (prompt and output, left padding excluded)."""
    vocab = scores.shape[-1]
    positions = torch.arange(sequences.shape[1], device=sequences.device)
    ids = sequences.masked_fill(positions[None, :] < pad_lengths[:, None], vocab)  # padding -> spare column
    seen = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
    seen.scatter_(1, ids, True)
    penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen[:, :vocab], penalized, scores)


class NoRepeatNGram:
    """Bans any token that would repeat an n-gram of the row, prompt included. Keeps per-row n-gram tables
    that grow by one token per step instead of rescanning the whole sequence."""

    def __init__(self, size: int, sequences: list[list[int]]) -> None:
        self.size = size
        self.tables: list[dict[tuple[int, ...], set[int]]] = []
        self.tokens: list[list[int]] = []
        for tokens in sequences:
            self.tables.append({})
            self.tokens.append([])
            for token in tokens:
                self.append(len(self.tokens) - 1, token)

    def append(self, row: int, token: int) -> None:
        tokens = self.tokens[row]
        tokens.append(token)
        if len(tokens) >= self.size:
            ngram = tokens[len(tokens) - self.size :]
            self.tables[row].setdefault(tuple(ngram[:-1]), set()).add(ngram[-1])

    def reorder(self, index: list[int]) -> None:
        """Row i becomes a copy of old row index[i] (beam search)."""
        self.tokens = [list(self.tokens[i]) for i in index]
        self.tables = [{key: set(value) for key, value in self.tables[i].items()} for i in index]

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return scores
        for row, tokens in enumerate(self.tokens):
            if len(tokens) + 1 < self.size:
                continue
            banned = self.tables[row].get(tuple(tokens[len(tokens) - self.size + 1 :]) if self.size > 1 else ())
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


def warp(scores: torch.Tensor, config: GenerationConfig, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus), each only when it changes something."""
    if config.temperature != 1.0:
        scores = scores / config.temperature
    if config.top_k != 0:
        top_k = min(max(config.top_k, min_tokens_to_keep), scores.shape[-1])
        kth_best = torch.topk(scores, top_k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth_best, -float("inf"))
    if config.top_p < 1.0:
        sorted_scores, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - config.top_p)
        remove_sorted[..., -min_tokens_to_keep:] = False
        remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
        scores = scores.masked_fill(remove, -float("inf"))
    return scores
