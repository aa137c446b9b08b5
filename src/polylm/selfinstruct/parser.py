"""Read numbered tasks back from a model's answer, however loosely it followed the format.

Accepted: labels with or without their number, in English or in the target language (`Instrucción:`,
`指示：`), in markdown bold (`**2. Output:**`), several on one line, with full-width colons; `###`, `---` or
nothing between tasks; chatter before the first label or after a separator; the answer starting straight
with the text of the instruction the prompt opened (`k+1. Instruction:`). A label whose number differs from
the current task's starts a new task, so a task that lost its instruction label is skipped rather than
merged into its neighbour. An answer cut by the token limit loses its last task, which is likely cut too.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from polylm.selfinstruct.locales import LOCALES
from polylm.selfinstruct.task import Task, make_task

FIELDS = ("instruction", "input", "output")
_ALIASES: dict[str, str] = {field: field for field in FIELDS}
for _locale in LOCALES.values():
    for _field, _names in zip(FIELDS, _locale.labels, strict=True):
        _ALIASES.update({name.casefold(): _field for name in _names})
_NAMES = "|".join(re.escape(name) for name in sorted(_ALIASES, key=len, reverse=True))
_LABEL = re.compile(
    rf"(?<!\w)[ \t>*_#-]*(?P<num>\d+)[ \t]*[.)．、]?[ \t]*[*_]*[ \t]*(?P<numbered>{_NAMES})[ \t]*[*_]*[ \t]*[:：][*_]*"
    rf"|^[ \t>*_#-]*(?P<bare>{_NAMES})[ \t]*[*_]*[ \t]*[:：][*_]*",
    re.IGNORECASE | re.MULTILINE,
)
_END_MARKERS = re.compile(r"<end_of_turn>|<eos>|</s>|<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>")
_SEPARATOR_LINE = re.compile(r"\n[ \t]*(?:#{2,}|-{3,}|={3,})")
_TRAILING_SEPARATORS = re.compile(r"(?:\s*(?:#{2,}(?!#)|-{3,}(?!-)|={3,}(?!=))|\n[ \t]*\d+[ \t]*[.)．])+\s*$")
"""Separators, and the bare number of a next list item the model began without its label ("...\n2."). Each
separator takes its whole run of `#`, `-` or `=`: were a run splittable among repetitions, a long one followed by
anything else would take exponential time to fail."""


@dataclass(frozen=True)
class Parsed:
    tasks: list[Task]
    truncated: int
    """Tasks dropped because the answer hit the token limit (0 or 1)."""


def _field(label: str) -> str:
    """The field a matched label names. IGNORECASE matches some letters that `casefold` spells otherwise (`İ`,
    `ı`), so those labels are looked up by matching the names again."""
    field = _ALIASES.get(label.casefold())
    if field is None:
        field = next(_ALIASES[name] for name in _ALIASES if re.fullmatch(re.escape(name), label, re.IGNORECASE))
    return field


def _number(digits: str) -> str:
    """A label's number as plain ASCII digits, so that `２`, `٢` and `02` are the same task; not an int, which
    Python refuses to make from more than 4300 digits."""
    return "".join(str(unicodedata.digit(digit)) for digit in digits).lstrip("0") or "0"


def _value(text: str) -> str:
    """A field's text: up to the first separator line, without trailing separators."""
    return _TRAILING_SEPARATORS.sub("", _SEPARATOR_LINE.split(text, 1)[0].strip()).strip()


def parse_answer(text: str, first_index: int, truncated: bool = False) -> Parsed | None:
    """Tasks in `text`, the answer to a prompt that ended with `{first_index}. Instruction:`; None when the
    answer has no label at all (free text, refusals, empty answers: worth asking again)."""
    text = _END_MARKERS.split(text.replace("\r\n", "\n"), 1)[0]
    first = _LABEL.search(text)
    if first is None:
        return None
    if text[: first.start()].strip(" \t\n*_#>-"):
        text = f"{first_index}. Instruction: {text.lstrip()}"
    matches = list(_LABEL.finditer(text))
    tasks: list[Task] = []
    current: dict[str, str | None] = {}

    def flush() -> None:
        task = make_task(current.get("instruction"), current.get("input"), current.get("output"))
        if task.instruction:
            tasks.append(task)

    for match, following in zip(matches, [*matches[1:], None], strict=True):
        field = _field(match["numbered"] or match["bare"])
        number = _number(match["num"]) if match["num"] else None
        value = _value(text[match.end() : following.start() if following else len(text)])
        known = current.get("number")
        if field == "instruction" or field in current or (None not in (number, known) and number != known):
            flush()
            current = {"number": number}
        current[field] = value
    flush()
    if truncated and tasks:
        return Parsed(tasks[:-1], 1)
    return Parsed(tasks, 0)
