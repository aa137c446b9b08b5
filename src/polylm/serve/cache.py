"""A KV cache whose rows come and go: the memory of continuous batching.

Rows are kept left-padded to one shared length, the layout `generate` decodes with, so the model's forward
needs nothing new: each row has its own pad count, hence its own positions and attention mask. A request that
joins is prefilled alone and copied in right-aligned (the others are shifted right if its prompt is longer);
a request that leaves is dropped, and columns that only padding still uses are cut off the left.
"""

from __future__ import annotations

import torch

from polylm.model import KVCache, PolyLM


class BatchCache(KVCache):
    """Keys and values of the running rows, (layers, rows, heads, capacity, head_dim); `pads[r]` left pad of row r."""

    def __init__(self, model: PolyLM) -> None:
        config = model.config
        self.context = config.max_position_embeddings
        self.shape = (config.num_layers, 0, config.num_heads, 0, config.head_dim)
        self.keys = torch.zeros(self.shape, device=model.device, dtype=model.activation_dtype)
        self.values = torch.zeros_like(self.keys)
        self.pads = torch.zeros(0, dtype=torch.long, device=model.device)
        self.length = 0

    @property
    def rows(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def _allocate(self, rows: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        layers, _, heads, _, head_dim = self.shape
        shape = (layers, rows, heads, capacity, head_dim)
        return (
            torch.zeros(shape, device=self.keys.device, dtype=self.keys.dtype),
            torch.zeros(shape, device=self.keys.device, dtype=self.keys.dtype),
        )

    def _grown(self, needed: int) -> int:
        """Capacity for `needed` positions: doubling, so that a growing sequence is copied O(log n) times."""
        capacity = max(self.capacity, 16)
        while capacity < needed:
            capacity *= 2
        return capacity

    def reserve(self, extra: int = 1) -> None:
        """Room for `extra` more positions before the next forward."""
        if self.length + extra <= self.capacity:
            return
        keys, values = self._allocate(self.rows, self._grown(self.length + extra))
        keys[:, :, :, : self.length] = self.keys[:, :, :, : self.length]
        values[:, :, :, : self.length] = self.values[:, :, :, : self.length]
        self.keys, self.values = keys, values

    def add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append rows whose `length` positions are all real (a fresh prefill), right-aligned with the others."""
        new_rows, length = keys.shape[1], keys.shape[3]
        total = max(self.length, length)
        shift = total - self.length
        new_keys, new_values = self._allocate(self.rows + new_rows, self._grown(total + 1))
        old = self.rows
        new_keys[:, :old, :, shift:total] = self.keys[:, :, :, : self.length]
        new_values[:, :old, :, shift:total] = self.values[:, :, :, : self.length]
        new_keys[:, old:, :, total - length : total] = keys
        new_values[:, old:, :, total - length : total] = values
        pads = torch.full((new_rows,), total - length, dtype=torch.long, device=self.pads.device)
        self.pads = torch.cat([self.pads + shift, pads])
        self.keys, self.values, self.length = new_keys, new_values, total

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (in that order), then cut the columns that are padding in every remaining row."""
        pads = self.pads[rows]
        cut = int(pads.min()) if rows.numel() else self.length
        length = self.length - cut
        keys, values = self._allocate(rows.numel(), self._grown(length + 1) if rows.numel() else 0)
        if rows.numel():
            keys[:, :, :, :length] = self.keys[:, rows, :, cut : self.length]
            values[:, :, :, :length] = self.values[:, rows, :, cut : self.length]
        self.keys, self.values, self.pads, self.length = keys, values, pads - cut, length

    def attention_mask(self) -> torch.Tensor | None:
        """(rows, length + 1) for feeding one token per row; None when no row is padded (the fast path)."""
        if not bool(self.pads.any()):
            return None
        positions = torch.arange(self.length + 1, device=self.pads.device)
        return (positions[None, :] >= self.pads[:, None]).long()

    def positions(self) -> torch.Tensor:
        """(rows, 1) position of the token each row is fed next: its count of real tokens so far."""
        return (self.length - self.pads)[:, None]
