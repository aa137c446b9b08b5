"""Beam search with transformers' semantics (its vectorised `_beam_search`, v4.50+), over our KV cache.

Per prompt, `num_beams` running hypotheses and up to `num_beams` finished ones. Each step takes the
top 2·num_beams (more with several eos ids) continuations of all running beams; those ending in eos (or
hitting the length limit) that rank within the first num_beams become finished candidates with score
sum(logprob) / generated_length**length_penalty; the best non-finished ones keep running. It stops as
`early_stopping` says: True once num_beams hypotheses are finished; False when the best running beam,
scored at its current length, cannot beat the worst finished one; "never" like False but scored at the
maximum length when length_penalty > 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from polylm.generate.batch import Generation, StopCriterion, make_batch
from polylm.generate.config import GenerationConfig
from polylm.generate.processors import NoRepeatNGram, repetition_penalty, warp
from polylm.model import PolyLM

NEG = -1.0e9  # transformers' "impossible" score


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[b, index[b, j], ...] for a (batch, beams, ...) tensor and a (batch, k) index."""
    while index.dim() < values.dim():
        index = index.unsqueeze(-1)
    return torch.gather(values, 1, index.expand(*index.shape[:2], *values.shape[2:]))


def beam_search(
    model: PolyLM,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    stop: StopCriterion | None = None,
) -> list[list[Generation]]:
    """The best num_return_sequences hypotheses of each prompt, best first."""
    batch = make_batch(model, prompts, config)
    size, beams = len(prompts), config.num_beams
    prompt_length = batch.input_ids.shape[1]
    max_new = batch.max_new_tokens
    total = prompt_length + max_new
    device = batch.input_ids.device
    eos = torch.tensor(config.eos_ids, dtype=torch.long, device=device)
    keep = max(2, 1 + len(config.eos_ids)) * beams
    top_beams_mask = torch.arange(keep, device=device) < beams
    generator = torch.Generator(device=device).manual_seed(config.seed) if config.seed is not None else None
    if max_new == 0:
        return [[Generation([], "length")] * config.num_return_sequences for _ in prompts]

    running = torch.full((size, beams, total), config.pad_id, dtype=torch.long, device=device)
    running[:, :, :prompt_length] = batch.input_ids[:, None, :]
    running_scores = torch.zeros(size, beams, device=device)
    running_scores[:, 1:] = NEG  # all beams start identical: only expand the first
    finished = running.clone()
    finished_scores = torch.full((size, beams), NEG, device=device)
    finished_lengths = torch.zeros(size, beams, dtype=torch.long, device=device)
    finished_by_stop = torch.zeros(size, beams, dtype=torch.bool, device=device)
    is_finished = torch.zeros(size, beams, dtype=torch.bool, device=device)
    can_improve = torch.ones(size, 1, dtype=torch.bool, device=device)

    flat_pad_lengths = batch.pad_lengths.repeat_interleave(beams)
    ngrams = None
    if config.no_repeat_ngram_size:
        rows = batch.unpadded_rows()
        ngrams = NoRepeatNGram(config.no_repeat_ngram_size, [row for row in rows for _ in range(beams)])
    mask = batch.attention_mask(max_new)
    flat_mask = mask.repeat_interleave(beams, dim=0) if mask is not None else None

    cache = model.new_cache(size, total)
    with torch.inference_mode():
        logits = model(
            batch.input_ids,
            attention_mask=batch.attention_mask(0),
            position_ids=batch.prompt_positions(),
            cache=cache,
            last_token_only=True,
        )[:, -1]
        # One prefill per prompt, then every beam starts from a copy of its cache and logits.
        expand = torch.arange(size, device=device).repeat_interleave(beams)
        cache.reorder(expand)
        logits = logits[expand]
        vocab = logits.shape[-1]
        for step in range(max_new):
            current = prompt_length + step
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            flat_running = running.view(size * beams, total)[:, :current]
            if config.repetition_penalty != 1.0:
                log_probs = repetition_penalty(log_probs, flat_running, flat_pad_lengths, config.repetition_penalty)
            if ngrams is not None:
                log_probs = ngrams(log_probs)
            if config.do_sample:
                log_probs = warp(log_probs, config, min_tokens_to_keep=max(len(config.eos_ids), 1) + 1)
            totals = (log_probs.view(size, beams, vocab) + running_scores[:, :, None]).view(size, beams * vocab)

            if config.do_sample:
                picks = torch.multinomial(torch.softmax(totals, dim=-1), keep, generator=generator)
                candidate_scores, order = torch.gather(totals, 1, picks).sort(dim=-1, descending=True)
                picks = picks.gather(1, order)
            else:
                # The top `keep` of all beams are among each beam's own top `keep`: two small top-k's are
                # about twice as fast as one over beams x 256K, and select the same candidates.
                per_beam_scores, per_beam_tokens = torch.topk(totals.view(size * beams, vocab), keep)
                candidate_scores, order = torch.topk(per_beam_scores.view(size, beams * keep), keep)
                offsets = (torch.arange(beams, device=device) * vocab)[:, None]
                picks = (per_beam_tokens.view(size, beams, keep) + offsets).view(size, -1).gather(1, order)
            source_beams, tokens = picks // vocab, picks % vocab
            candidates = _gather(running, source_beams)
            candidates[:, :, current] = tokens

            hits_eos = torch.isin(tokens, eos)
            hits_stop = torch.zeros_like(hits_eos)
            if stop is not None:
                for b, j in (~hits_eos).nonzero().tolist():
                    hits_stop[b, j] = stop(candidates[b, j, prompt_length : current + 1].tolist())
            at_limit = current + 1 >= total
            hits = hits_eos | hits_stop | at_limit

            # The best candidates that go on.
            live_scores = candidate_scores + hits.float() * NEG
            chosen = torch.topk(live_scores, beams)[1]
            running = _gather(candidates, chosen)
            running_scores = _gather(live_scores, chosen)
            chosen_sources = _gather(source_beams, chosen)

            # Candidates that end here compete with the finished hypotheses.
            just_finished = hits & top_beams_mask[None, :]
            ended_scores = candidate_scores / ((current + 1 - prompt_length) ** config.length_penalty)
            full = is_finished.all(dim=-1, keepdim=True) & (config.early_stopping is True)
            ended_scores = ended_scores + full.float() * NEG + (~can_improve).float() * NEG
            ended_scores = ended_scores + (~just_finished).float() * NEG
            merged_scores = torch.cat([finished_scores, ended_scores], dim=1)
            best = torch.topk(merged_scores, beams)[1]
            finished = _gather(torch.cat([finished, candidates], dim=1), best)
            finished_scores = _gather(merged_scores, best)
            ended_length = torch.full_like(tokens, step + 1)
            finished_lengths = _gather(torch.cat([finished_lengths, ended_length], dim=1), best)
            finished_by_stop = _gather(torch.cat([finished_by_stop, hits_eos | hits_stop], dim=1), best)
            is_finished = _gather(torch.cat([is_finished, just_finished], dim=1), best)

            flat_sources = (chosen_sources + torch.arange(size, device=device)[:, None] * beams).flatten()
            cache.reorder(flat_sources)
            if ngrams is not None:
                ngrams.reorder(flat_sources.tolist())
                for row, token in enumerate(running[:, :, current].flatten().tolist()):
                    ngrams.append(row, token)

            if config.early_stopping == "never" and config.length_penalty > 0.0:
                best_length = total - prompt_length
            else:
                best_length = current + 1 - prompt_length
            best_possible = running_scores[:, :1] / (best_length**config.length_penalty)
            worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], NEG)
            can_improve = can_improve & (best_possible > worst_finished).any(dim=-1, keepdim=True)
            all_full = bool(is_finished.all()) and config.early_stopping is True
            if not can_improve.any() or all_full or bool(hits.all()) or step + 1 == max_new:
                break

            next_tokens = running[:, :, current].reshape(-1, 1)
            logits = model(
                next_tokens,
                attention_mask=flat_mask[:, : current + 1] if flat_mask is not None else None,
                position_ids=batch.step_positions(step + 1).repeat_interleave(beams, dim=0),
                cache=cache,
                last_token_only=True,
            )[:, -1]

    results = []
    for b in range(size):
        hypotheses = []
        for j in range(config.num_return_sequences):
            length = int(finished_lengths[b, j])
            tokens = finished[b, j, prompt_length : prompt_length + length].tolist()
            reason = "stop" if finished_by_stop[b, j] else "length"
            hypotheses.append(Generation(tokens, reason, score=float(finished_scores[b, j])))
        results.append(hypotheses)
    return results
