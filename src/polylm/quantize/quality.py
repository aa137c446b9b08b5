"""What quantizing cost: held-out perplexity per language and greedy agreement, source model vs quantized one.

Measured on a directory written by `polylm data prepare` (its validation shards are text the model never trained
on), so `polylm quantize --compare DATA_DIR` answers "how much worse is int4, and in which languages" with the
same numbers pretraining reports.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import torch

from polylm.data.prepare import load_summary
from polylm.data.shards import ShardSet
from polylm.errors import PolyLMError
from polylm.generate import GenerationConfig, generate
from polylm.hf_checkpoint import load_model
from polylm.model import PolyLM
from polylm.train.data import PretrainingData
from polylm.train.trainer import evaluate


def held_out_prompts(data_dir: Path, count: int, length: int) -> list[list[int]]:
    """The first `length` tokens of held-out documents, taken from each language in turn."""
    sources = [ShardSet(data_dir / "validation" / s["name"]) for s in load_summary(data_dir).get("validation", [])]
    prompts: list[list[int]] = []
    for index in range(max((s.num_documents for s in sources), default=0)):
        for shards in sources:
            if index < shards.num_documents and len(prompts) < count:
                document = shards.document(index)
                if len(document) > length:
                    prompts.append(document[:length].tolist())
    return prompts


def perplexity_by_language(model: PolyLM, data: PretrainingData, max_tokens: int) -> dict[str, float]:
    losses = evaluate(model, data, max_tokens, 8, nullcontext(), torch.device("cpu"))
    return {lang: math.exp(loss) for lang, loss in losses.items()}


def compare(source_dir: Path, quantized_dir: Path, data_dir: Path, prompts: int = 64, new_tokens: int = 16) -> dict:
    """Perplexity per language of both models (and the relative change), and the share of prompts whose greedy
    continuation of `new_tokens` tokens is the same."""
    data = PretrainingData(data_dir)
    source, quantized = load_model(source_dir, dtype="float32"), load_model(quantized_dir)
    if data.tokenizer.vocab_size > source.config.vocab_size:
        raise PolyLMError(f"{data_dir}: its tokenizer is not the model's ({source_dir})")
    max_tokens = 50_000
    before = perplexity_by_language(source, data, max_tokens)
    after = perplexity_by_language(quantized, data, max_tokens)
    inputs = held_out_prompts(data_dir, prompts, length=24)
    config = GenerationConfig(max_new_tokens=new_tokens, eos_token_id=None)
    same = sum(
        a[0].token_ids == b[0].token_ids
        for a, b in zip(generate(source, inputs, config), generate(quantized, inputs, config), strict=True)
    )
    return {
        "perplexity": {
            lang: {"source": before[lang], "quantized": after[lang], "change": after[lang] / before[lang] - 1}
            for lang in before
        },
        "greedy_same": same,
        "greedy_prompts": len(inputs),
    }
