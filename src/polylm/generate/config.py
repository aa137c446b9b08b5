"""Decoding options, with transformers' defaults and semantics so that results match `model.generate`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from polylm.errors import PolyLMError

EARLY_STOPPING_VALUES = (True, False, "never")


@dataclass
class GenerationConfig:
    """How to decode. Defaults are transformers' (top_k 50 when sampling, length_penalty 1.0, ...)."""

    max_new_tokens: int | None = 128
    """Tokens to generate at most; wins over max_length when both are set."""
    max_length: int | None = None
    """Prompt (padded) plus generated tokens at most, transformers' older limit."""
    do_sample: bool = False
    """Sample the next token instead of taking the most likely one (greedy) or the best beams."""
    temperature: float = 1.0
    """Sampling divides the logits by this: below 1 sharper, above 1 flatter."""
    top_k: int = 50
    """Sampling keeps the k most likely tokens (0 = all)."""
    top_p: float = 1.0
    """Sampling keeps the smallest set of tokens whose probability reaches top_p."""
    repetition_penalty: float = 1.0
    """> 1 discourages tokens already in the prompt or output (CTRL's rule, as transformers applies it)."""
    no_repeat_ngram_size: int = 0
    """Never repeat an n-gram of this size (0 = off)."""
    num_beams: int = 1
    """Beam search over this many hypotheses when > 1 (PolyLM's translation setting: 4)."""
    length_penalty: float = 1.0
    """Beam scores are sum(logprob) / generated_length**length_penalty."""
    early_stopping: bool | str = False
    """Beam search: True stops when num_beams hypotheses are done; False/"never" as transformers."""
    num_return_sequences: int = 1
    """Sequences returned per prompt (sampled ones, or the best beams)."""
    eos_token_id: int | list[int] | None = 2
    """Stop on this token (`</s>`), or on any of a list; none: stop only on length or a stop string."""
    pad_token_id: int | None = None
    """Fills finished rows and left padding; defaults to the first eos id, as transformers does."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: generation ends when the text contains one; the returned text stops before it."""
    seed: int | None = None
    """Seeds a private generator for sampling; None uses torch's global one (as transformers does)."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def eos_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)

    @property
    def pad_id(self) -> int:
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_ids[0] if self.eos_ids else 0

    def new_tokens_for(self, prompt_length: int) -> int:
        """Tokens to generate after a (padded) prompt of `prompt_length` tokens."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        if self.max_length is not None:
            return max(self.max_length - prompt_length, 0)
        return GenerationConfig.max_new_tokens

    def replace(self, **changes: object) -> GenerationConfig:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise PolyLMError(f"unknown generation option {_option(unknown[0])}")
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Refuse impossible settings, naming the option (and its CLI flag)."""
        checks = [
            ("num_beams", self.num_beams >= 1, "must be at least 1"),
            ("num_return_sequences", self.num_return_sequences >= 1, "must be at least 1"),
            ("top_p", 0.0 < self.top_p <= 1.0, "must be in (0, 1]"),
            ("top_k", self.top_k >= 0, "must be 0 (off) or positive"),
            ("temperature", self.temperature > 0.0 or not self.do_sample, "must be > 0 when sampling"),
            ("repetition_penalty", self.repetition_penalty > 0.0, "must be > 0"),
            ("no_repeat_ngram_size", self.no_repeat_ngram_size >= 0, "must be 0 (off) or positive"),
            ("max_new_tokens", self.max_new_tokens is None or self.max_new_tokens >= 0, "must be >= 0"),
            ("max_length", self.max_length is None or self.max_length >= 1, "must be >= 1"),
            ("early_stopping", self.early_stopping in EARLY_STOPPING_VALUES, "must be true, false or 'never'"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise PolyLMError(f"generation option {_option(name)} {rule}, got {getattr(self, name)!r}")
        if self.num_beams == 1 and not self.do_sample and self.num_return_sequences > 1:
            raise PolyLMError(
                f"generation option {_option('num_return_sequences')} > 1 needs sampling or num_beams >= it"
            )
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise PolyLMError(
                f"generation option {_option('num_return_sequences')} ({self.num_return_sequences}) "
                f"cannot exceed num_beams ({self.num_beams})"
            )


def _option(name: str) -> str:
    return f"{name!r} (--{name.replace('_', '-')})"
