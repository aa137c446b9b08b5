"""What `polylm evaluate` is asked to do: one dataclass, the source of its command-line flags and recorded in
the output as it is. Imports nothing heavy, so that `polylm --help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field

PREFIX_TOKENS = ("eos", "bos")


@dataclass
class EvalConfig:
    """What `polylm evaluate` was asked to do; recorded in the output as it is."""

    model: str
    """Model directory (with tokenizer.model), or a hub id."""
    tasks: list[str] = field(metadata={"comma_separated": True})
    """Benchmarks: xnli, xcopa, pawsx, xwinograd, tydiqa, xquad, mtg (= mtg_story, mtg_question, mtg_title,
    mtg_summary), wmt20, flores."""
    languages: list[str] | None = field(default=None, metadata={"comma_separated": True})
    """Language codes (translation: directions like en-zh, or a language); none: each task's default languages
    (translation: the directions in the data directory)."""
    data_dir: str = "data/benchmarks"
    """The benchmark folder (layout in docs/evaluation.md)."""
    num_fewshot: int = 0
    """Examples before each item."""
    limit: int | None = None
    """Score only the first N items of each language (after malformed rows are set aside)."""
    batch_size: int = 8
    """Sequences per forward pass."""
    seed: int = 1234
    """Few-shot examples are drawn with random.Random(seed), afresh for each task and language."""
    num_beams: int = 1
    """1: greedy generation; more: beam search with early stopping (PolyLM's MT setting is 4)."""
    max_new_tokens: int | None = None
    """None: each task's own limit."""
    prefix_token: str = field(default="eos", metadata={"choices": PREFIX_TOKENS})
    """Stands in for an empty context (XNLI, PAWS-X): `</s>`, which precedes every document PolyLM was
    trained on, or `<s>`, which lm-evaluation-harness uses when the tokenizer defines one."""
    skip_bad_rows: bool = False
    """Leave malformed rows out (counted in the output) instead of failing."""
    device: str = "cpu"
    """cpu, cuda, cuda:1, ..."""
    dtype: str | None = field(default=None, metadata={"choices": ("float32", "bfloat16", "float16")})
    """The weights' dtype; none: the checkpoint's."""
