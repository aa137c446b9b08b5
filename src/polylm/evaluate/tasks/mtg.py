"""MTG (multilingual text generation): story, question and title generation and summarization in en/de/fr/es/zh.

`[Prompt][Input][Output]`: an instruction line, the input, then the model's output until a newline, scored by
ROUGE-L with the multilingual tokenizer. The MTG release format and PolyLM's instructions were not available:
the files read here are `mtg/<subtask>/test.<lang>.jsonl` (or `.json`, a list) of {"src": input, "tgt":
reference or list of references}, and the English instructions below are UNVERIFIED defaults.
"""

from __future__ import annotations

from pathlib import Path

from polylm.errors import PolyLMError
from polylm.evaluate.data import BadRows, first_existing, read_json, read_jsonl
from polylm.evaluate.metrics import rouge_l
from polylm.evaluate.tasks.base import GenerationDoc, GenerationTask, Split

INSTRUCTIONS = {
    "story": "Continue the story.",
    "question": "Write a question about the passage whose answer is given.",
    "title": "Write a title for the article.",
    "summary": "Summarize the article in one sentence.",
}


def mtg_doc(record: object, subtask: str, path: Path, where: int | str, bad: BadRows) -> GenerationDoc | None:
    src = record.get("src") if isinstance(record, dict) else None
    tgt = record.get("tgt") if isinstance(record, dict) else None
    references = [tgt] if isinstance(tgt, str) else tgt
    if not isinstance(src, str) or not src.strip():
        bad.add(path, where, "field 'src' is missing or empty")
    elif not isinstance(references, list) or not references or not all(isinstance(r, str) for r in references):
        bad.add(path, where, "field 'tgt' is not a string or a list of strings")
    else:
        return GenerationDoc(f"{INSTRUCTIONS[subtask]}\n{src.strip()}\n", tuple(references))
    return None


class MTGTask(GenerationTask):
    languages = ("de", "en", "es", "fr", "zh")
    default_languages = languages
    max_new_tokens = 128

    def __init__(self, subtask: str) -> None:
        self.subtask = subtask
        self.name = f"mtg_{subtask}"
        self.description = f"MTG {subtask} generation, ROUGE-L"

    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        folder = data_dir / "mtg" / self.subtask
        path = first_existing([folder / f"test.{lang}.jsonl", folder / f"test.{lang}.json"], f"MTG {self.name} {lang}")
        if path.suffix == ".jsonl":
            records = list(read_jsonl(path, bad))
        else:
            document = read_json(path)
            if not isinstance(document, list):
                raise PolyLMError(f"{path}: expected a JSON list of {{'src': ..., 'tgt': ...}} objects")
            records = [(f"[{i}]", record) for i, record in enumerate(document)]
        docs = [mtg_doc(record, self.subtask, path, where, bad) for where, record in records]
        return Split([d for d in docs if d is not None], sources=[str(path)])

    def score(self, lang: str, predictions: list[str], docs: list[GenerationDoc]) -> tuple[dict, dict]:
        return {"rougeL": rouge_l(predictions, [d.references for d in docs])}, {}
