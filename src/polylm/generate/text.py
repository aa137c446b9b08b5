"""Text in, text out: prompt templates, stop strings and streaming on top of token-level decoding."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from polylm.errors import PolyLMError
from polylm.generate.batch import StopCriterion
from polylm.generate.beam_search import beam_search
from polylm.generate.config import GenerationConfig
from polylm.generate.decode import generate
from polylm.generate.sampling import sample_steps
from polylm.inference import prepare_for_inference
from polylm.model import PolyLM
from polylm.templates import Turn, render_prompt
from polylm.tokenizer import Tokenizer


@dataclass
class TextGeneration:
    text: str
    """The continuation, cut before the first stop string; eos decodes to nothing."""
    token_ids: list[int]
    """Generated tokens only (eos included when produced)."""
    finish_reason: str
    score: float | None = None

    def record(self) -> dict:
        """What `polylm generate --json` prints of it."""
        return {"text": self.text, "token_ids": self.token_ids, "finish_reason": self.finish_reason}


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def _withheld(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string (not safe to show yet)."""
    return max((n for s in stops for n in range(len(s) - 1, 0, -1) if text.endswith(s[:n])), default=0)


class TextGenerator:
    """A model, its tokenizer and a prompt template: what the CLI, the pipeline and the server share."""

    def __init__(self, model: PolyLM, tokenizer: Tokenizer, template: str = "plain") -> None:
        render_prompt(template, "")  # refuses an unknown template now rather than at the first prompt
        self.model, self.tokenizer, self.template = prepare_for_inference(model), tokenizer, template

    @classmethod
    def load(
        cls,
        model: str | Path,
        template: str = "plain",
        dtype: str | None = None,
        device: str = "cpu",
        revision: str | None = None,
    ) -> TextGenerator:
        """From a model directory or hub id (at `revision`): its weights and the tokenizer beside them."""
        from polylm.hf_checkpoint import load_model
        from polylm.hub import resolve_model_dir

        model_dir = resolve_model_dir(model, revision)
        return cls(load_model(model_dir, dtype=dtype, device=device), Tokenizer.from_dir(model_dir), template)

    def prompt_ids(self, query: str, history: Sequence[Turn] = ()) -> list[int]:
        return self.tokenizer.encode(render_prompt(self.template, query, history))

    def _stop_criterion(self, config: GenerationConfig) -> StopCriterion | None:
        if not config.stop:
            return None
        return lambda ids: any(s in self.tokenizer.decode(ids) for s in config.stop)

    def _text(self, token_ids: list[int], config: GenerationConfig) -> str:
        return _cut_at_stop(self.tokenizer.decode(token_ids), config.stop)

    def __call__(
        self, queries: Sequence[str], config: GenerationConfig, history: Sequence[Turn] = ()
    ) -> list[list[TextGeneration]]:
        """For each query, its num_return_sequences continuations."""
        prompts = [self.prompt_ids(query, history) for query in queries]
        results = generate(self.model, prompts, config, self._stop_criterion(config))
        return [
            [TextGeneration(self._text(g.token_ids, config), g.token_ids, g.finish_reason, g.score) for g in row]
            for row in results
        ]

    def stream(self, query: str, config: GenerationConfig, history: Sequence[Turn] = ()) -> Iterator[str]:
        """Pieces of the continuation as they are decided (beam search decides only at the end)."""
        prompt = self.prompt_ids(query, history)
        if config.num_beams > 1:
            best = beam_search(self.model, [prompt], config, self._stop_criterion(config))[0][0]
            yield self._text(best.token_ids, config)
            return
        shown = 0
        generation = None
        config = config.replace(num_return_sequences=1)
        for results in sample_steps(self.model, [prompt], config, self._stop_criterion(config)):
            generation = results[0]
            text = self._text(generation.token_ids, config)
            if generation.finish_reason != "stop":
                # Hold back a half-decoded character and anything that may be the start of a stop string.
                text = text.rstrip("\ufffd")
                text = text[: len(text) - _withheld(text, config.stop)]
            if len(text) > shown:
                yield text[shown:]
                shown = len(text)
        final = self._text(generation.token_ids, config) if generation is not None else ""
        if len(final) > shown:
            yield final[shown:]


def read_prompts(file: Path) -> list[str]:
    """One prompt per line, or for prompts with newlines a .jsonl file of {"prompt": ...} objects."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolyLMError(f"{file}: cannot read prompts ({exc})") from None
    if file.suffix != ".jsonl":
        return [line for line in lines if line.strip()]
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            prompts.append(record if isinstance(record, str) else record["prompt"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise PolyLMError(f'{file}: line {number} is not a JSON string or an object with a "prompt" key') from None
    return prompts
