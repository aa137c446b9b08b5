"""Extractive QA by generation: TyDiQA-GoldP and XQuAD (its stand-in, with zh and th).

Prompt `"<Context>: {context}\n\n<Question>: {question}\n\n<Answer>:"` in the item's language (the harness's
words), greedy until a newline, scored by EM and F1 (see metrics.py; character tokens for zh/ja/th).

- XQuAD: `xquad/xquad.<lang>.json`, SQuAD v1.1 JSON.
- TyDiQA-GoldP: the official `tydiqa/tydiqa-goldp-v1.1-dev.json` (SQuAD JSON, every language) or, if it is
  absent, every `tydiqa/*goldp*.jsonl` file of records {id, context, question, answers} (the Hugging Face
  `secondary_task` export; `answers` as {"text": [...]} or [{"text": ...}]). A language's items are those whose
  id starts with its English name (`arabic-...`), as the harness selects them.
"""

from __future__ import annotations

from pathlib import Path

from polylm.errors import PolyLMError
from polylm.evaluate.data import BadRows, read_json, read_jsonl, require
from polylm.evaluate.metrics import exact_match, f1
from polylm.evaluate.prompts import qa_prompt
from polylm.evaluate.tasks.base import GenerationDoc, GenerationTask, Split

TYDIQA_NAMES = {
    "ar": "arabic",
    "bn": "bengali",
    "en": "english",
    "fi": "finnish",
    "id": "indonesian",
    "ko": "korean",
    "ru": "russian",
    "sw": "swahili",
    "te": "telugu",
}


def answer_texts(answers: object) -> list[str] | None:
    """Answer strings from SQuAD's [{"text": ...}] or the datasets export's {"text": [...]}."""
    if isinstance(answers, dict):
        texts = answers.get("text")
    elif isinstance(answers, list):
        texts = [a.get("text") if isinstance(a, dict) else None for a in answers]
    else:
        return None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        return None
    return texts


def qa_item(record: dict, lang: str, path: Path, where: int | str, bad: BadRows) -> GenerationDoc | None:
    context, question = record.get("context"), record.get("question")
    answers = answer_texts(record.get("answers"))
    if not isinstance(context, str) or not isinstance(question, str) or not context.strip() or not question.strip():
        bad.add(path, where, "context or question is missing or empty")
    elif answers is None:
        bad.add(path, where, "answers are missing or empty")
    else:
        return GenerationDoc(qa_prompt(lang, context, question), tuple(answers))
    return None


def squad_items(path: Path, lang: str, bad: BadRows, id_prefix: str = "") -> list[GenerationDoc]:
    """The questions of a SQuAD-format file (only ids starting with `id_prefix`); bad ones are named by place."""
    document = read_json(path)
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise PolyLMError(f"{path}: expected SQuAD JSON, an object with a 'data' list")
    docs = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            for q, qa in enumerate(paragraph.get("qas", []) if isinstance(paragraph, dict) else []):
                if not isinstance(qa, dict) or not str(qa.get("id", "")).startswith(id_prefix):
                    continue
                where = f"data[{a}].paragraphs[{p}].qas[{q}]"
                doc = qa_item({**qa, "context": paragraph.get("context")}, lang, path, where, bad)
                if doc is not None:
                    docs.append(doc)
    return docs


class QATask(GenerationTask):
    max_new_tokens = 32

    def score(self, lang: str, predictions: list[str], docs: list[GenerationDoc]) -> tuple[dict, dict]:
        pairs = list(zip(predictions, docs, strict=True))
        em = sum(exact_match(p, d.references, lang) for p, d in pairs)
        f = sum(f1(p, d.references, lang) for p, d in pairs)
        n = max(len(pairs), 1)
        return {"exact_match": em / n, "f1": f / n}, {}


class XQuAD(QATask):
    name = "xquad"
    description = "XQuAD extractive QA (the TyDiQA stand-in with zh/th), EM and F1"
    languages = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
    default_languages = ("ar", "de", "en", "es", "ru", "th", "tr", "vi", "zh")  # PolyLM's languages

    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        path = require(data_dir / "xquad" / f"xquad.{lang}.json", f"XQuAD {lang} file")
        return Split(squad_items(path, lang, bad), sources=[str(path)])


class TyDiQA(QATask):
    name = "tydiqa"
    description = "TyDiQA-GoldP extractive QA (dev), EM and F1"
    languages = tuple(TYDIQA_NAMES)
    default_languages = tuple(TYDIQA_NAMES)

    def load(self, data_dir: Path, lang: str, bad: BadRows) -> Split:
        prefix = f"{TYDIQA_NAMES[lang]}-"
        official = data_dir / "tydiqa" / "tydiqa-goldp-v1.1-dev.json"
        if official.is_file():
            return Split(squad_items(official, lang, bad, prefix), sources=[str(official)])
        files = sorted((data_dir / "tydiqa").glob("*goldp*.jsonl"))
        if not files:
            raise PolyLMError(
                f"{official}: TyDiQA-GoldP data not found, nor any {data_dir / 'tydiqa'}/*goldp*.jsonl "
                "(see docs/evaluation.md for the data-dir layout)"
            )
        docs = []
        for path in files:
            for line, record in read_jsonl(path, bad):
                if str(record.get("id", "")).startswith(prefix):
                    doc = qa_item(record, lang, path, line, bad)
                    if doc is not None:
                        docs.append(doc)
        return Split(docs, sources=[str(p) for p in files])
