"""`generate`: token ids in, continuations out, by the strategy the config names."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from polylm.generate.batch import Generation, StopCriterion
from polylm.generate.beam_search import beam_search
from polylm.generate.config import GenerationConfig
from polylm.generate.sampling import sample_steps
from polylm.model import PolyLM


def generate(
    model: PolyLM,
    prompts: Sequence[Sequence[int]],
    config: GenerationConfig,
    stop: StopCriterion | None = None,
) -> list[list[Generation]]:
    """For each prompt, its num_return_sequences continuations (best first for beam search)."""
    if config.num_beams > 1:
        return beam_search(model, prompts, config, stop)
    n = config.num_return_sequences
    last_step = deque(sample_steps(model, prompts, config, stop), maxlen=1)
    results = last_step[0] if last_step else [Generation([], "length") for _ in range(len(prompts) * n)]
    return [results[i * n : (i + 1) * n] for i in range(len(prompts))]
