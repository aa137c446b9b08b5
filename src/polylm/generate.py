"""Text generation over the KV cache.

Greedy decoding for now; sampling, beam search and batching come with issue B.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from polylm.errors import PolyLMError
from polylm.model import PolyLM


@torch.inference_mode()
def greedy_generate(
    model: PolyLM, prompt_ids: Sequence[int], max_new_tokens: int, eos_token_id: int | None = None
) -> list[int]:
    """Generated token ids (prompt excluded), stopping after `eos_token_id` or `max_new_tokens`."""
    if not prompt_ids:
        raise PolyLMError("the prompt encodes to no tokens")
    limit = model.config.max_position_embeddings
    max_new_tokens = min(max_new_tokens, limit - len(prompt_ids))
    if max_new_tokens <= 0:
        raise PolyLMError(f"the prompt has {len(prompt_ids)} tokens; the model's context is {limit}")
    device = model.wte.weight.device
    cache = model.new_cache(batch_size=1, max_length=len(prompt_ids) + max_new_tokens)
    next_input = torch.tensor([list(prompt_ids)], device=device)
    generated: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(next_input, cache=cache, last_token_only=True)
        token = int(logits[0, -1].argmax())
        generated.append(token)
        if token == eos_token_id:
            break
        next_input = torch.tensor([[token]], device=device)
    return generated
