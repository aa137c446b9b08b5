"""XNLI (facebook/xnli): three-way NLI as rank classification with the harness's localized template.

No shared context: each choice is the whole string `" " + premise + ", Q? LABEL, " + hypothesis` (the
harness's target delimiter comes first), scored after the prefix token. Read from the official XNLI-1.0
`xnli/xnli.test.tsv` (all languages, a `language` column) or from `xnli/<lang>/test.jsonl` (premise,
hypothesis, label 0/1/2). The test split is scored (PolyLM's paper; the harness scores validation);
`xnli.dev.tsv` or `<lang>/validation.jsonl` gives the few-shot examples.
"""

from __future__ import annotations

from pathlib import Path

from polylm.evaluate.data import BadRows, field_str, first_existing, read_jsonl, read_tsv_records
from polylm.evaluate.prompts import XNLI_WORDS
from polylm.evaluate.tasks.base import ChoiceDoc, ChoiceTask, Split, check_label

LABELS = ("entailment", "neutral", "contradiction")
TSV_COLUMNS = ("language", "gold_label", "sentence1", "sentence2")


def to_doc(premise: str, hypothesis: str, label: int, lang: str) -> ChoiceDoc:
    question, *answers = XNLI_WORDS[lang]
    return ChoiceDoc(
        pairs=tuple(("", f" {premise}, {question}? {answer}, {hypothesis}") for answer in answers), gold=label
    )


def read_split(data_dir: Path, lang: str, tsv_split: str, jsonl_split: str, bad: BadRows) -> tuple[list, Path]:
    tsv = data_dir / "xnli" / f"xnli.{tsv_split}.tsv"
    jsonl = data_dir / "xnli" / lang / f"{jsonl_split}.jsonl"
    path = first_existing([jsonl, tsv], f"XNLI {lang} {jsonl_split} data")
    docs = []
    if path == jsonl:
        for line, record in read_jsonl(path, bad):
            premise, hypothesis = (field_str(record, key, path, line, bad) for key in ("premise", "hypothesis"))
            label = check_label(record.get("label"), 3, "label", path, line, bad)
            if premise is not None and hypothesis is not None and label is not None:
                docs.append(to_doc(premise, hypothesis, label, lang))
        return docs, path
    for line, row in read_tsv_records(path, TSV_COLUMNS, bad):
        if row["language"] != lang:
            continue
        if row["gold_label"] not in LABELS:
            bad.add(path, line, f"gold_label is {row['gold_label']!r}, expected one of {', '.join(LABELS)}")
        elif not row["sentence1"].strip() or not row["sentence2"].strip():
            bad.add(path, line, "sentence1 or sentence2 is empty")
        else:
            docs.append(to_doc(row["sentence1"], row["sentence2"], LABELS.index(row["gold_label"]), lang))
    return docs, path


class XNLI(ChoiceTask):
    name = "xnli"
    description = "XNLI natural language inference (test), accuracy"
    languages = tuple(XNLI_WORDS)
    default_languages = ("ar", "de", "en", "es", "fr", "ru", "th", "tr", "vi", "zh")

    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        docs, path = read_split(data_dir, lang, "test", "test", bad)
        split = Split(docs, sources=[str(path)])
        dev_files = (data_dir / "xnli" / "xnli.dev.tsv", data_dir / "xnli" / lang / "validation.jsonl")
        if any(f.is_file() for f in dev_files):
            split.fewshot_pool, dev_path = read_split(data_dir, lang, "dev", "validation", bad)
            split.sources.append(str(dev_path))
        return split
