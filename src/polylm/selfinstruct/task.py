"""One instruction task in MultiAlpaca's shape, and the clean-up every task gets wherever it comes from."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WRAPPING_QUOTES = {'"': '"', "“": "”", "„": "“", "«": "»", "「": "」", "『": "』", "'": "'"}
_LEADING_BULLETS = re.compile(r"^(?:[-*•·>#]+\s*)+")
_MARKER = re.compile(r"<\s*no[\s_-]*input\s*>", re.IGNORECASE)
_NO_INPUT = re.compile(r"\(?\s*(?:none|n/a|no input)\s*\)?", re.IGNORECASE)


@dataclass(frozen=True)
class Task:
    instruction: str
    input: str
    output: str

    def record(self) -> dict[str, str]:
        """The MultiAlpaca line (`input` is "" when the task has none, as in Alpaca)."""
        return {"instruction": self.instruction, "input": self.input, "output": self.output}


def _unmarked(text: str) -> str:
    """Without the `<noinput>` placeholder, which weak models also write into instructions and outputs."""
    return _MARKER.sub("", text).strip()


def clean_instruction(text: str) -> str:
    """One line, without list bullets or quotes wrapping the whole instruction (MultiAlpaca's ja file has 460
    instructions in quotes: a generation artefact that would teach the model to answer quoted prompts)."""
    text = _LEADING_BULLETS.sub("", " ".join(_unmarked(text).split()))
    while len(text) >= 2 and _WRAPPING_QUOTES.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def clean_input(text: str | None) -> str:
    """Stripped, without `<noinput>`; "" for the placeholders meaning "no input"."""
    text = _unmarked(text or "")
    return "" if _NO_INPUT.fullmatch(text) else text


def make_task(instruction: str | None, input_text: str | None, output: str | None) -> Task:
    return Task(clean_instruction(instruction or ""), clean_input(input_text), _unmarked(output or ""))


def task_from_record(row: dict) -> Task:
    """The task of a MultiAlpaca line (`instruction`, `input`, `output`; a missing field is empty)."""
    return make_task(row.get("instruction"), row.get("input"), row.get("output"))
