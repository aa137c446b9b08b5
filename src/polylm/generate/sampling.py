"""Greedy decoding and sampling over the KV cache, batched with left padding.

Step for step what transformers' `_sample` does: penalties on the raw logits, warpers when sampling,
`torch.multinomial` over the whole batch (finished rows included, so the random stream stays aligned),
finished rows fed the pad token until every row is done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from polylm.generate.batch import Generation, StopCriterion, make_batch
from polylm.generate.config import GenerationConfig
from polylm.generate.processors import NoRepeatNGram, repetition_penalty, warp
from polylm.model import PolyLM


def sample_steps(
    model: PolyLM,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    stop: StopCriterion | None = None,
) -> Iterator[tuple[torch.Tensor, list[Generation]]]:
    """Yield (tokens chosen this step, per-row results so far) after every step.

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

    cache = model.new_cache(rows, batch.input_ids.shape[1] + batch.max_new_tokens)
    with torch.inference_mode():
        logits = model(
            batch.input_ids,
            attention_mask=batch.attention_mask(0),
            position_ids=batch.prompt_positions(),
            cache=cache,
            last_token_only=True,
        )
        for step in range(batch.max_new_tokens):
            scores = logits[:, -1].float()
            if config.repetition_penalty != 1.0:
                scores = repetition_penalty(scores, sequences, batch.pad_lengths, config.repetition_penalty)
            if ngrams is not None:
                scores = ngrams(scores)
            if config.do_sample:
                probs = torch.softmax(warp(scores, config), dim=-1)
                tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
            else:
                tokens = scores.argmax(dim=-1)
            tokens = torch.where(unfinished, tokens, config.pad_id)
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
            yield tokens, results
            if not unfinished.any() or step + 1 == batch.max_new_tokens:
                return
            logits = model(
                tokens[:, None],
                attention_mask=batch.attention_mask(step + 1),
                position_ids=batch.step_positions(step + 1),
                cache=cache,
                last_token_only=True,
            )
