"""The model side of evaluation: log-likelihoods of continuations, and generation until a stop string.

Both follow lm-evaluation-harness's request semantics so that scores are comparable:

- A (context, continuation) pair moves the context's trailing whitespace into the continuation, encodes
  context + continuation whole and takes the continuation's tokens as what follows the context's own encoding.
  An empty context is replaced by the prefix token. Inputs longer than the model's context are cut from the left.
- Generation cuts prompts from the left to leave room for the new tokens; its text ends before the first stop
  string. Unlike the harness, leading whitespace is dropped first, so a model that starts its answer on a new
  line is not cut to an empty answer by a "\\n" stop.

Requests are sorted by length (longest first) so that batches need little padding. A request's own computation
does not depend on what else is in its batch: a scoring input is padded on the right (unseen by the causal
attention) to its bucket, its length rounded up to a multiple of BUCKET whatever the batch holds, and only the
continuation's positions go through the output layer; generation prompts are padded on the left under an
attention mask, as transformers does. What can still differ between batch sizes is float
rounding inside the matrix products (BLAS picks kernels by row count), about 1e-6 of a log-likelihood.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
from tqdm import tqdm

from polylm.errors import PolyLMError
from polylm.generate import GenerationConfig, generate
from polylm.inference import prepare_for_inference
from polylm.model import PolyLM
from polylm.tokenizer import Tokenizer

BUCKET = 8
"""Scoring inputs are right-padded to a multiple of this many tokens."""
HEAD_ROWS = 1024
"""Positions per output-layer product: bounds the (rows x vocabulary) logits held at once."""


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The answer in generated text: leading whitespace dropped, cut before the first stop string."""
    text = text.lstrip()
    return text[: min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))]


def _batches(order: list[int], key: list[int], size: int) -> Iterator[list[int]]:
    """Runs of `order` with equal `key`, in chunks of at most `size`."""
    for _, run in itertools.groupby(order, key=lambda i: key[i]):
        run = list(run)
        for start in range(0, len(run), size):
            yield run[start : start + size]


class LanguageModel:
    """A PolyLM and its tokenizer, answering evaluation requests in batches of `batch_size`."""

    def __init__(self, model: PolyLM, tokenizer: Tokenizer, batch_size: int, prefix_token_id: int) -> None:
        if batch_size < 1:
            raise PolyLMError(f"--batch-size must be at least 1, got {batch_size}")
        self.model = prepare_for_inference(model)
        self.tokenizer, self.batch_size, self.prefix_token_id = tokenizer, batch_size, prefix_token_id
        self.max_length = model.config.max_position_embeddings
        self.device = model.device

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of a context and its continuation, split the way the harness splits them."""
        if not context:
            tokens = self.tokenizer.encode(continuation)
            if tokens and tokens[0] == self.prefix_token_id:
                return tokens[:1], tokens[1:]
            return [self.prefix_token_id], tokens
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        context_ids = self.tokenizer.encode(context)
        return context_ids, whole[len(context_ids) :]

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[tuple[str, str]], progress: tqdm) -> list[float]:
        """Sum of log P(continuation token | everything before it) for each (context, continuation)."""
        rows: list[list[int]] = []
        continuation_lengths: list[int] = []
        for context, continuation in requests:
            context_ids, continuation_ids = self.encode_pair(context, continuation)
            if not continuation_ids or len(continuation_ids) > self.max_length:
                raise PolyLMError(
                    f"continuation {continuation[:40]!r} encodes to {len(continuation_ids)} tokens; "
                    f"scoring needs 1 to {self.max_length} (the model's context)"
                )
            rows.append((context_ids + continuation_ids)[-(self.max_length + 1) :])
            continuation_lengths.append(len(continuation_ids))
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), rows[i]))
        buckets = [min(-(-(len(row) - 1) // BUCKET) * BUCKET, self.max_length) for row in rows]
        scores = [0.0] * len(rows)
        for batch in _batches(order, buckets, self.batch_size):
            input_ids = torch.zeros((len(batch), buckets[batch[0]]), dtype=torch.long)
            for row, index in enumerate(batch):
                input_ids[row, : len(rows[index]) - 1] = torch.tensor(rows[index][:-1])
            hidden = self.model.hidden_states(input_ids.to(self.device))
            counts = [continuation_lengths[i] for i in batch]
            ends = [len(rows[i]) - 1 for i in batch]
            # Only the positions that predict continuation tokens go through the (vocabulary-sized) output layer.
            selected = torch.cat(
                [hidden[row, end - n : end] for row, (end, n) in enumerate(zip(ends, counts, strict=True))]
            )
            targets = torch.tensor(
                [t for i, n in zip(batch, counts, strict=True) for t in rows[i][-n:]], device=self.device
            )
            token_lls = torch.cat(
                [
                    self.model.wte.attend(chunk).float().log_softmax(-1).gather(-1, target[:, None])[:, 0]
                    for chunk, target in zip(selected.split(HEAD_ROWS), targets.split(HEAD_ROWS), strict=True)
                ]
            )
            for index, value in zip(batch, token_lls.split(counts), strict=True):
                scores[index] = value.sum().item()
            progress.update(len(batch))
        return scores

    def generate_until(
        self, prompts: Sequence[str], stop: Sequence[str], config: GenerationConfig, progress: tqdm
    ) -> list[str]:
        """The answer generated after each prompt (see cut_at_stop)."""
        room = self.max_length - config.max_new_tokens
        if room < 1:
            raise PolyLMError(f"{config.max_new_tokens} new tokens leave no room for a prompt in {self.max_length}")
        encoded = [self.tokenizer.encode(prompt)[-room:] for prompt in prompts]
        for index, ids in enumerate(encoded):
            if not ids:
                raise PolyLMError(f"prompt {prompts[index][:40]!r} encodes to no tokens")
        order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
        decode = self.tokenizer.decode

        def stopped(ids: list[int]) -> bool:
            return any(s in decode(ids).lstrip() for s in stop)

        answers = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            results = generate(self.model, [encoded[i] for i in batch], config, stopped if stop else None)
            for index, [best, *_] in zip(batch, results, strict=True):
                answers[index] = cut_at_stop(decode(best.token_ids), stop)
            progress.update(len(batch))
        return answers
