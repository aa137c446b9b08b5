"""XCOPA (cambridgeltl/xcopa): causal commonsense, two choices, the harness's prompt.

Context `premise.strip()[:-1] + " " + connector`, choices with their first letter lowercased after a space.
The upstream files' `question` field (cause/effect, which picks the connector) is wrong for many th, tr, sw, id
and it items; it is taken from a language whose fields are right (et, ht, qu, ta, vi, zh agree with each other),
matched by `idx`, and the number of changed items is recorded in the output.
"""

from __future__ import annotations

from pathlib import Path

from polylm.evaluate.data import BadRows, field_str, read_jsonl, require
from polylm.evaluate.prompts import XCOPA_CONNECTORS
from polylm.evaluate.tasks.base import ChoiceDoc, ChoiceTask, Split, check_label

# Languages whose `question` fields agree with each other (and with English COPA); the first one present
# in the data directory corrects the others.
REFERENCE_LANGUAGES = ("et", "ht", "qu", "ta", "vi", "zh")
QUESTIONS = ("cause", "effect")


def xcopa_path(data_dir: Path, lang: str, split: str) -> Path:
    return data_dir / "xcopa" / lang / f"{split}.{lang}.jsonl"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def read_items(path: Path, bad: BadRows) -> list[dict]:
    """The valid rows of an XCOPA jsonl file (premise, choice1, choice2, question, label, idx)."""
    items = []
    for line, record in read_jsonl(path, bad):
        texts = [field_str(record, key, path, line, bad) for key in ("premise", "choice1", "choice2")]
        if None in texts:
            continue
        label = check_label(record.get("label"), 2, "label", path, line, bad)
        question = record.get("question")
        if question not in QUESTIONS:
            bad.add(path, line, f"field 'question' is {question!r}, expected 'cause' or 'effect'")
            continue
        if label is None:
            continue
        idx = record.get("idx")
        items.append(
            {
                "premise": texts[0],
                "choice1": texts[1],
                "choice2": texts[2],
                "question": question,
                "label": label,
                "idx": idx,
            }
        )
    return items


def fix_questions(items: list[dict], data_dir: Path, lang: str, split: str) -> dict[str, object]:
    """Replace wrong `question` fields from a reference language, in place; returns notes for the output."""
    if lang in REFERENCE_LANGUAGES:
        return {"questions_fixed": 0, "question_reference": lang}
    reference = next((r for r in REFERENCE_LANGUAGES if xcopa_path(data_dir, r, split).is_file()), None)
    if reference is None:
        return {"questions_fixed": 0, "question_reference": None}
    truth = {item["idx"]: item["question"] for item in read_items(xcopa_path(data_dir, reference, split), BadRows())}
    fixed = 0
    for item in items:
        right = truth.get(item["idx"], item["question"])
        if right != item["question"]:
            item["question"] = right
            fixed += 1
    return {"questions_fixed": fixed, "question_reference": reference}


def to_doc(item: dict, lang: str) -> ChoiceDoc:
    cause, effect = XCOPA_CONNECTORS[lang]
    connector = cause if item["question"] == "cause" else effect
    context = item["premise"].strip()[:-1] + " " + connector
    choices = (" " + _lower_first(item["choice1"]), " " + _lower_first(item["choice2"]))
    return ChoiceDoc(pairs=tuple((context, choice) for choice in choices), gold=item["label"])


class XCOPA(ChoiceTask):
    name = "xcopa"
    description = "XCOPA causal commonsense reasoning (test split), accuracy"
    languages = tuple(XCOPA_CONNECTORS)
    default_languages = ("id", "it", "th", "tr", "vi", "zh")  # the PolyLM languages among XCOPA's 11

    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        test_path = require(xcopa_path(data_dir, lang, "test"), f"XCOPA {lang} test file")
        items = read_items(test_path, bad)
        notes = fix_questions(items, data_dir, lang, "test")
        split = Split([to_doc(item, lang) for item in items], sources=[str(test_path)], notes=notes)
        val_path = xcopa_path(data_dir, lang, "val")
        if val_path.is_file():
            val_items = read_items(val_path, bad)
            fix_questions(val_items, data_dir, lang, "val")
            split.fewshot_pool = [to_doc(item, lang) for item in val_items]
            split.sources.append(str(val_path))
        return split
