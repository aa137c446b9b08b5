"""PAWS-X (google-research-datasets/paws-x): paraphrase identification as rank classification.

No shared context and no delimiter: the choices are `s1 + ", Q? NO, " + s2` and `s1 + ", Q? YES, " + s2`
(label 1 = paraphrase). English is detokenized first, as the harness does: the final `.`/`,`/`;` of s1 is
dropped and s2 starts lowercase. Files: `pawsx/<lang>/test_2k.tsv` (id, sentence1, sentence2, label), with
`dev_2k.tsv` for few-shot examples. Rows with an empty sentence are malformed rows (the harness drops them).
"""

from __future__ import annotations

import re
from pathlib import Path

from polylm.evaluate.data import BadRows, read_tsv_records, require
from polylm.evaluate.prompts import PAWSX_WORDS
from polylm.evaluate.tasks.base import ChoiceDoc, ChoiceTask, Split, check_label

COLUMNS = ("sentence1", "sentence2", "label")


def detokenize(text: str) -> str:
    """The harness's `general_detokenize` for the tokenized English PAWS sentences."""
    for before, after in ((" n't", "n't"), (" )", ")"), ("( ", "("), ('" ', '"'), (' "', '"')):
        text = text.replace(before, after)
    return re.sub(r" (['.,])", r"\1", text)


def to_doc(s1: str, s2: str, label: int, lang: str) -> ChoiceDoc:
    if lang == "en":
        s1, s2 = detokenize(s1).strip(), detokenize(s2).strip()
        s1 = s1[:-1] if s1.endswith((".", ",", ";")) else s1
        s2 = s2[:1].lower() + s2[1:]
    question, yes, no = PAWSX_WORDS[lang]
    return ChoiceDoc(pairs=tuple(("", f"{s1}, {question}? {answer}, {s2}") for answer in (no, yes)), gold=label)


def read_split(path: Path, lang: str, bad: BadRows) -> list[ChoiceDoc]:
    docs = []
    for line, row in read_tsv_records(path, COLUMNS, bad):
        label = check_label(row["label"], 2, "label", path, line, bad)
        if not row["sentence1"].strip() or not row["sentence2"].strip():
            bad.add(path, line, "sentence1 or sentence2 is empty")
        elif label is not None:
            docs.append(to_doc(row["sentence1"], row["sentence2"], label, lang))
    return docs


class PAWSX(ChoiceTask):
    name = "pawsx"
    description = "PAWS-X paraphrase identification (test), accuracy"
    languages = tuple(PAWSX_WORDS)
    default_languages = tuple(PAWSX_WORDS)

    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        path = require(data_dir / "pawsx" / lang / "test_2k.tsv", f"PAWS-X {lang} test file")
        split = Split(read_split(path, lang, bad), sources=[str(path)])
        dev = data_dir / "pawsx" / lang / "dev_2k.tsv"
        if dev.is_file():
            split.fewshot_pool = read_split(dev, lang, bad)
            split.sources.append(str(dev))
        return split
