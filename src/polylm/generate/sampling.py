"""Greedy decoding and sampling over the KV cache, batched with left padding.

Step for step what transformers' `_sample` does: penalties on the raw logits, warpers when sampling,
`torch.multinomial` over the whole batch (finished rows included, so the random stream stays aligned),
finished rows fed the pad token until every row is done. Plain greedy decoding of an fp32 model on CPU takes
the argmax through `greedy_head` (an exact shortcut past the 256K-row output layer).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from polylm.generate.batch import Generation, StopCriterion, make_batch
from polylm.generate.config import GenerationConfig
from polylm.generate.greedy_head import int8_argmax_head
from polylm.generate.processors import NoRepeatNGram, repetition_penalty, warp
from polylm.model import PolyLM


def sample_steps(
    model: PolyLM,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    stop: StopCriterion | None = None,
) -> Iterator[list[Generation]]:
    """Yield the per-row results so far after every step (streaming reads them as they grow).

    Rows are the prompts, each repeated num_return_sequences times. The last yield has every row finished.
    """
    batch = make_batch(model, prompts, config, repeat=config.num_return_sequences)
    rows = batch.input_ids.shape[0]
    device = batch.input_ids.device
    eos = torch.tensor(config.eos_ids, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(config.seed) if config.seed is not None else None
    ngrams = NoRepeatNGram(config.no_repeat_ngram_size, batch.unpadded_rows()) if config.no_repeat_ngram_size else None
    results = [Generation([], "length") for _ in range(rows)]
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    sequences = batch.input_ids
    plain_greedy = not config.do_sample and config.repetition_penalty == 1.0 and ngrams is None
    fast_head = int8_argmax_head(model) if plain_greedy and isinstance(model, PolyLM) else None
    cache = model.new_cache(rows, batch.input_ids.shape[1] + batch.max_new_tokens)

    def next_tokens(ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
        if fast_head is not None:
            hidden = model.hidden_states(ids, mask, positions, cache, last_token_only=True)
            return fast_head.argmax(hidden[:, -1])
        scores = model(ids, mask, positions, cache, last_token_only=True)[:, -1].float()
        if config.repetition_penalty != 1.0:
            scores = repetition_penalty(scores, sequences, batch.pad_lengths, config.repetition_penalty)
        if ngrams is not None:
            scores = ngrams(scores)
        if not config.do_sample:
            return scores.argmax(dim=-1)
        probs = torch.softmax(warp(scores, config), dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)

    ids, mask, positions = batch.input_ids, batch.attention_mask(0), batch.prompt_positions()
    with torch.inference_mode():
        for step in range(batch.max_new_tokens):
            tokens = torch.where(unfinished, next_tokens(ids, mask, positions), config.pad_id)
            sequences = torch.cat([sequences, tokens[:, None]], dim=1)
            done = torch.isin(tokens, eos) & unfinished
            for row in unfinished.nonzero().flatten().tolist():
                token = int(tokens[row])
                results[row].token_ids.append(token)
                if ngrams is not None:
                    ngrams.append(row, token)
                if done[row] or (stop is not None and stop(results[row].token_ids)):
                    results[row].finish_reason = "stop"
                    done[row] = True
            unfinished &= ~done
            yield results
            if not unfinished.any():
                return
            ids, mask, positions = tokens[:, None], batch.attention_mask(step + 1), batch.step_positions(step + 1)
