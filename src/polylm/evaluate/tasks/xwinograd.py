"""XWinograd: pronoun resolution in the harness's "multiple input" form.

Each option fills the blank: contexts `sentence[:blank] + option_k`, one shared continuation
`" " + sentence[blank + 1:].strip()`. Two file forms are read:

- `xwinograd/<code>/test.jsonl`: the Hugging Face form (Muennighoff/xwinograd), `sentence` with `_`,
  `option1`, `option2`, `answer` ("1"/"2"); preferred when present (its zh has 504 items).
- `xwinograd/dataset.tsv`: the original release (yandex-research/crosslingual_winograd), 7 columns without
  a header: lang, origin, English source, sentence, tokens, pronoun `[text, [start, end], tokens]`,
  candidates `[[text, [start, end], tokens, is_correct], ...]`. The pronoun's token span is located in the
  sentence and replaced by `_`, keeping the sentence's own spacing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from polylm.evaluate.data import BadRows, field_str, first_existing, read_jsonl, read_tsv
from polylm.evaluate.tasks.base import ChoiceDoc, ChoiceTask, Split, check_label

# Our language code -> the dataset's (which says jp for Japanese).
CODES = {"en": "en", "fr": "fr", "ja": "jp", "pt": "pt", "ru": "ru", "zh": "zh"}
# Penn Treebank quote tokens in the English rows, and what the sentence has instead.
PTB_QUOTES = {"``": '"', "''": '"'}


def token_offsets(sentence: str, tokens: list[str]) -> list[tuple[int, int]] | None:
    """Character span of each token, found left to right; None if the tokens do not spell the sentence."""
    spans, position = [], 0
    for token in tokens:
        for form in (token, PTB_QUOTES.get(token)):
            start = sentence.find(form, position) if form else -1
            if start >= 0 and not sentence[position:start].strip():
                spans.append((start, start + len(form)))
                position = start + len(form)
                break
        else:
            return None
    return spans


def tsv_item(fields: list[str], path: Path, line: int, bad: BadRows) -> dict | None:
    """The Hugging Face form of one dataset.tsv row, or None after recording why it is malformed."""
    sentence = fields[3]
    try:
        tokens = json.loads(fields[4])
        _, (first, last), _ = json.loads(fields[5])
        candidates = [(c[0], bool(c[3])) for c in json.loads(fields[6])]
    except (json.JSONDecodeError, ValueError, TypeError, IndexError) as exc:
        bad.add(path, line, f"tokens, pronoun or candidates column is not the expected JSON ({exc})")
        return None
    spans = token_offsets(sentence, tokens) if isinstance(tokens, list) else None
    if spans is None or not 0 <= first < last <= len(spans):
        bad.add(path, line, "the pronoun's token span does not match the sentence")
        return None
    correct = [i for i, (_, is_correct) in enumerate(candidates) if is_correct]
    if len(candidates) != 2 or len(correct) != 1:
        bad.add(path, line, f"expected 2 candidates with one correct, found {len(candidates)} with {len(correct)}")
        return None
    blanked = sentence[: spans[first][0]] + "_" + sentence[spans[last - 1][1] :]
    return {
        "sentence": blanked.strip(),
        "option1": candidates[0][0],
        "option2": candidates[1][0],
        "answer": correct[0] + 1,
    }


def to_doc(item: dict) -> ChoiceDoc:
    blank = item["sentence"].index("_")
    continuation = " " + item["sentence"][blank + 1 :].strip()
    options = (item["option1"], item["option2"])
    return ChoiceDoc(
        pairs=tuple((item["sentence"][:blank] + o, continuation) for o in options), gold=item["answer"] - 1
    )


def read_jsonl_items(path: Path, bad: BadRows) -> list[dict]:
    items = []
    for line, record in read_jsonl(path, bad):
        texts = [field_str(record, key, path, line, bad) for key in ("sentence", "option1", "option2")]
        if None in texts:
            continue
        answer = check_label(record.get("answer"), 3, "answer", path, line, bad)
        if answer is None:
            continue
        if answer == 0 or "_" not in texts[0]:
            bad.add(path, line, "expected a sentence with a '_' blank and answer 1 or 2")
            continue
        items.append({"sentence": texts[0], "option1": texts[1], "option2": texts[2], "answer": answer})
    return items


class XWinograd(ChoiceTask):
    name = "xwinograd"
    description = "XWinograd pronoun resolution (test), accuracy"
    languages = tuple(CODES)
    default_languages = tuple(CODES)
    aliases: ClassVar[dict[str, str]] = {"jp": "ja"}

    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        jsonl = data_dir / "xwinograd" / CODES[lang] / "test.jsonl"
        path = first_existing([jsonl, data_dir / "xwinograd" / "dataset.tsv"], f"XWinograd {lang} data")
        if path == jsonl:
            return Split([to_doc(item) for item in read_jsonl_items(jsonl, bad)], sources=[str(jsonl)])
        items = []
        for line, fields in read_tsv(path, 7, bad):
            if fields[0] == CODES[lang]:
                item = tsv_item(fields, path, line, bad)
                if item is not None:
                    items.append(item)
        return Split([to_doc(item) for item in items], sources=[str(path)])
