"""What a benchmark is to the runner: how to load a language's items, and how they are scored."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from polylm.evaluate.data import BadRows


@dataclass(frozen=True)
class ChoiceDoc:
    """A multiple-choice item: the (context, continuation) scored for each choice, and the gold choice.

    Usually the context is shared and the continuations differ (XCOPA); XWinograd shares the continuation.
    """

    pairs: tuple[tuple[str, str], ...]
    gold: int

    def demonstration(self) -> str:
        """The item with its answer, as a few-shot example."""
        context, continuation = self.pairs[self.gold]
        return context + continuation


@dataclass(frozen=True)
class GenerationDoc:
    """A prompt to continue and the acceptable answers (the first one is the few-shot answer)."""

    prompt: str
    references: tuple[str, ...]


@dataclass
class Split:
    """One language of a task, as loaded: items to score and where few-shot examples come from."""

    docs: list
    fewshot_pool: list | None = None
    """A separate split (dev/validation); None draws examples from `docs`, never the item itself."""
    sources: list[str] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)
    """Anything the output should record about the data, e.g. how many XCOPA questions were fixed."""


class Task(ABC):
    """A benchmark. `languages` are the keys of results[task]; for translation they are directions (en-zh)."""

    name: str
    description: str
    languages: tuple[str, ...]
    default_languages: tuple[str, ...]
    aliases: ClassVar[dict[str, str]] = {}
    """Other names users may pass in --languages, e.g. XWinograd's `jp` for `ja`."""

    def available_languages(self, data_dir: Path) -> tuple[str, ...]:
        """The languages a run without --languages evaluates."""
        return self.default_languages

    def select_languages(self, requested: Sequence[str] | None, data_dir: Path) -> list[str]:
        """The requested languages this task has (all requested, if given with only this task in mind)."""
        if requested is None:
            return list(self.available_languages(data_dir))
        return [lang for lang in (self.aliases.get(r, r) for r in requested) if lang in self.languages]

    @abstractmethod
    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        """Read `lang`'s items from `data_dir` (missing files raise, malformed rows go to `bad`)."""


class ChoiceTask(Task):
    """Scored by log-likelihood: the argmax over choices is the prediction (acc), or over per-character
    log-likelihoods of the continuations (acc_norm)."""


class GenerationTask(Task):
    """Scored on text generated greedily (or by beam search) until a stop string."""

    stop: tuple[str, ...] = ("\n",)
    max_new_tokens: int = 128
    target_delimiter: str = " "
    """Between a few-shot example's prompt and its answer."""

    @abstractmethod
    def score(self, lang: str, predictions: list[str], docs: list[GenerationDoc]) -> tuple[dict, dict]:
        """(metric -> value, metric -> signature or {})."""

    def demonstration(self, doc: GenerationDoc) -> str:
        return doc.prompt + self.target_delimiter + doc.references[0]


def check_label(value: object, count: int, key: str, path: Path, line: int, bad: BadRows) -> int | None:
    """An integer label in [0, count) (also from a digit string), or None after recording the bad row."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        bad.add(path, line, f"field {key!r} is {value!r}, expected an integer in 0..{count - 1}")
        return None
    return value
