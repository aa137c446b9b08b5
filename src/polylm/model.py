"""The PolyLM decoder: GPT-2 layout as PolyLM's Megatron run trained it.

Pre-LayerNorm blocks, learned absolute positions, biases everywhere, tanh-GELU, input and output
embeddings tied, no dropout. Module and parameter names follow Hugging Face's GPT-2 (`wte`, `h.N.attn.c_attn`,
...) so that checkpoint conversion is a prefix strip plus a transpose of Conv1D weights (see `hf_checkpoint.py`).
Parallelism lives elsewhere; this file is only the math.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from polylm.config import TANH_GELU_NAMES, ModelConfig
from polylm.loss import linear_cross_entropy, logits_cross_entropy


class Mask(NamedTuple):
    """Attention mask for SDPA: a boolean tensor (True = may attend), or None with the causal flag."""

    tensor: torch.Tensor | None
    is_causal: bool


class KVCache:
    """Preallocated keys and values of every layer; the first `length` positions are filled."""

    def __init__(
        self, config: ModelConfig, batch_size: int, max_length: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        shape = (config.num_layers, batch_size, config.num_heads, max_length, config.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values for `layer` and return everything cached so far."""
        end = self.length + keys.shape[2]
        self.keys[layer, :, :, self.length : end] = keys
        self.values[layer, :, :, self.length : end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def reorder(self, batch_index: torch.Tensor) -> None:
        """Row i becomes old row batch_index[i]: beam search reshuffles, or expands a prompt into its beams.

        Only the filled positions are copied, so the cost grows with the sequence, not with max_length.
        """
        if batch_index.numel() != self.keys.shape[1]:
            self.keys = self.keys.index_select(1, batch_index)
            self.values = self.values.index_select(1, batch_index)
            return
        filled = slice(0, self.length)
        self.keys[:, :, :, filled] = self.keys[:, batch_index, :, filled]
        self.values[:, :, :, filled] = self.values[:, batch_index, :, filled]


class TiedEmbedding(nn.Embedding):
    """The token embedding, also the output layer: `attend` multiplies hidden states by its transpose.

    Inference backends swap this module for one with a faster `attend` (`polylm.inference`) or with int8
    weights (`polylm.quantize`); everything that needs logits goes through `attend`.
    """

    def attend(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: Mask, cache: KVCache | None, layer: int) -> torch.Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.c_attn(x).split(hidden, dim=2)
        q, k, v = (t.view(batch, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update(layer, k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.tensor, is_causal=mask.is_causal)
        return self.c_proj(y.transpose(1, 2).reshape(batch, length, hidden))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.ffn_size)
        self.c_proj = nn.Linear(config.ffn_size, config.hidden_size)
        self.approximate = "tanh" if config.activation in TANH_GELU_NAMES else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: Mask, cache: KVCache | None, layer: int) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class PolyLM(nn.Module):
    """Decoder-only LM. The output layer reuses `wte.weight` (tied), so there is no separate lm_head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = TiedEmbedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.h = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def init_weights(self, generator: torch.Generator | None = None, rows_held: RowsHeld | None = None) -> None:
        """Megatron init: N(0, std) for weights and embeddings, std/sqrt(2L) for the residual outputs.

        The values come from `generator` (a CPU one) in a fixed order, drawn in row chunks (`normal_rows`), so the
        whole model never has to exist at once. `rows_held(param)` says which rows of each weight this process
        holds, as (tensor to fill, first row, end row): all of them by default, one rank's shard under FSDP. Every
        process draws the whole stream and keeps its rows, so any sharding gets the single-process values.
        """
        rows_held = rows_held or (lambda param: (param.data, 0, param.shape[0]))
        std = self.config.init_std
        scaled_std = std / math.sqrt(2 * self.config.num_layers)
        with torch.no_grad():
            for name, module in self.named_modules():
                if isinstance(module, nn.Linear):
                    _fill_normal(module.weight, scaled_std if name.endswith("c_proj") else std, generator, rows_held)
                    rows_held(module.bias)[0].zero_()
                elif isinstance(module, nn.Embedding):
                    _fill_normal(module.weight, std, generator, rows_held)
                elif isinstance(module, nn.LayerNorm):
                    rows_held(module.weight)[0].fill_(1.0)
                    rows_held(module.bias)[0].zero_()

    @property
    def device(self) -> torch.device:
        return self.wpe.weight.device

    @property
    def activation_dtype(self) -> torch.dtype:
        """The dtype of hidden states and of the KV cache (the weights may be stored narrower, once quantized)."""
        return self.wpe.weight.dtype

    def new_cache(self, batch_size: int, max_length: int | None = None) -> KVCache:
        length = max_length or self.config.max_position_embeddings
        return KVCache(self.config, batch_size, length, self.device, self.activation_dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_token_only: bool = False,
        targets: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits for `input_ids` (batch, length); with `targets`, the training loss instead.

        attention_mask: (batch, cached + length), 1 for real tokens and 0 for padding, as in transformers.
        position_ids: default `cached + arange(length)`, as transformers does; left-padded callers pass
            their own. cache: filled in place and advanced by `length`.
        last_token_only: return logits of the final position only (generation needs no more).
        targets: (batch, length) next-token ids, -100 where not counted. Returns (mean loss over the counted
            tokens, per-token losses detached) from the fused output layer of `polylm.loss`, which never holds
            the whole logits. It goes through `forward` so that DDP's and FSDP's hooks see it.
        segment_ids: (batch, length) for sequences packed with several examples: a position attends only to
            earlier positions of its own segment (pass position_ids restarting at each segment too).
        """
        hidden = self.hidden_states(input_ids, attention_mask, position_ids, cache, last_token_only, segment_ids)
        if targets is not None:
            if isinstance(self.wte, TiedEmbedding):
                return linear_cross_entropy(hidden, self.wte.weight, targets)
            return logits_cross_entropy(hidden, self.wte.attend, targets)  # a quantized output layer
        return self.wte.attend(hidden)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_token_only: bool = False,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final LayerNorm's output, the input of the tied output layer; arguments as `forward`."""
        batch, length = input_ids.shape
        past = cache.length if cache is not None else 0
        if past + length > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence of {past + length} tokens exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}"
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=input_ids.device).unsqueeze(0)
        mask = self._attention_mask(attention_mask, batch, length, past, input_ids.device, segment_ids)

        x = self.wte(input_ids) + self.wpe(position_ids)
        for layer, block in enumerate(self.h):
            x = block(x, mask, cache, layer)
        if cache is not None:
            cache.length += length
        return self.ln_f(x[:, -1:] if last_token_only else x)

    @staticmethod
    def _attention_mask(
        attention_mask: torch.Tensor | None,
        batch: int,
        length: int,
        past: int,
        device: torch.device,
        segment_ids: torch.Tensor | None = None,
    ) -> Mask:
        """What each query may attend to, with the fused kernels' fast paths where there is no padding."""
        if segment_ids is not None:
            if attention_mask is not None or past:
                raise ValueError("segment_ids are for packed training sequences: no attention_mask, no cache")
            causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
            same = segment_ids[:, :, None] == segment_ids[:, None, :]
            return Mask((causal & same)[:, None], is_causal=False)
        if attention_mask is None and past == 0:
            return Mask(None, is_causal=True)  # a fresh unpadded sequence
        if attention_mask is None and length == 1:
            return Mask(None, is_causal=False)  # one new token sees the whole cache
        query_pos = torch.arange(past, past + length, device=device)
        key_pos = torch.arange(past + length, device=device)
        allowed = (key_pos[None, :] <= query_pos[:, None]).expand(batch, 1, length, past + length)
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, :].bool()
            # A query whose every key is padding (left padding) would softmax to NaN; let it see itself.
            dead = ~allowed.any(dim=-1, keepdim=True)
            allowed = allowed | (dead & (key_pos[None, :] == query_pos[:, None]))
        return Mask(allowed, is_causal=False)


RowsHeld = Callable[[torch.Tensor], tuple[torch.Tensor, int, int]]


def normal_rows(
    shape: torch.Size, std: float, generator: torch.Generator | None, max_elements: int = 1 << 24
) -> Iterator[tuple[int, torch.Tensor]]:
    """The N(0, std) values one `normal_` call on a CPU tensor of `shape` draws from `generator`, as (first row,
    rows) chunks of at most about `max_elements`. torch draws 16 values at a time (and redraws the last 16 of a
    size that is not a multiple of 16), so every chunk but the last holds a multiple of 16 values and the last at
    least 16: then the chunks hold exactly the numbers of the one call, and leave the generator where it would."""
    rows, row_size = shape[0], math.prod(shape[1:])
    step = 16 // math.gcd(row_size, 16)
    per = max(step, max_elements // max(row_size, 1) // step * step)
    bounds = [*range(0, rows, per), rows]
    if len(bounds) > 2 and (bounds[-1] - bounds[-2]) * row_size < 16:
        del bounds[-2]
    for start, stop in itertools.pairwise(bounds):
        yield start, torch.empty((stop - start, *shape[1:])).normal_(0.0, std, generator=generator)


def _fill_normal(param: torch.Tensor, std: float, generator: torch.Generator | None, rows_held: RowsHeld) -> None:
    target, first, end = rows_held(param)
    for start, values in normal_rows(param.shape, std, generator):
        low, high = max(start, first), min(start + len(values), end)
        if low < high:
            target[low - first : high - first].copy_(values[low - start : high - start])


def count_parameters(config: ModelConfig) -> int:
    """Parameter count of `config` from a meta-device model: no weights are allocated."""
    with torch.device("meta"):
        model = PolyLM(config)
    return sum(p.numel() for p in model.parameters())


def build_model(config: ModelConfig, seed: int = 0, device: str | torch.device = "cpu") -> PolyLM:
    """A randomly initialised model (Megatron init) in the config's dtype."""
    with torch.device("meta"):
        model = PolyLM(config)
    model.to_empty(device=device)
    model.init_weights(torch.Generator().manual_seed(seed))
    return model.to(getattr(torch, config.dtype))
