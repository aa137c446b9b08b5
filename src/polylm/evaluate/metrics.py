"""Metrics with the multilingual fixes the usual implementations lack.

- EM/F1: SQuAD/MLQA-style normalization (lowercase, every Unicode punctuation character removed, en/ar
  articles dropped) but with one token per character for zh, ja and th, whose whitespace tokens are whole
  clauses (the harness's whitespace F1 is 0 for almost every partial answer there).
- ROUGE-L: rouge-score with a tokenizer that keeps every script (its default keeps only [a-z0-9]: Chinese and
  Russian score 0) and splits CJK/Thai text into characters.
- BLEU and chrF: sacrebleu with the tokenizer WMT uses for the target language, and the signature.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

import regex
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from polylm.errors import PolyLMError

CHARACTER_LANGUAGES = frozenset({"zh", "ja", "th"})
ARTICLES = {"en": re.compile(r"\b(a|an|the)\b"), "ar": re.compile(r"(?:^|\s)ال")}

# sacrebleu tokenizer by target language (WMT practice); every other target uses 13a.
BLEU_TOKENIZERS = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab", "th": "char"}

# Scripts written without spaces between words get one token per character; elsewhere a token is a run of
# letters, marks and digits of any script (marks included, so Devanagari or vowelled Arabic stay whole words).
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
_TOKEN = regex.compile(rf"[{_UNSPACED}]|(?:(?![{_UNSPACED}])[\p{{L}}\p{{M}}\p{{N}}])+")


def _is_punctuation(ch: str) -> bool:
    """Unicode punctuation (categories P*) plus ASCII punctuation and symbols, as MLQA's script removes."""
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str, lang: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (as MLQA's evaluation script)."""
    text = "".join(ch for ch in text.lower() if not _is_punctuation(ch))
    if lang in ARTICLES:
        text = ARTICLES[lang].sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str, lang: str) -> list[str]:
    normalized = normalize_answer(text, lang)
    if lang in CHARACTER_LANGUAGES:
        return [ch for ch in normalized if not ch.isspace()]
    return normalized.split()


def exact_match(prediction: str, references: Sequence[str], lang: str) -> float:
    """1.0 if the normalized prediction equals a normalized reference (spaces ignored for zh/ja/th)."""
    predicted = answer_tokens(prediction, lang)
    return float(any(answer_tokens(ref, lang) == predicted for ref in references))


def f1(prediction: str, references: Sequence[str], lang: str) -> float:
    """Token-overlap F1, the max over references."""
    predicted = answer_tokens(prediction, lang)
    best = 0.0
    for reference in references:
        gold = answer_tokens(reference, lang)
        common = sum((Counter(predicted) & Counter(gold)).values())
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


class MultilingualTokenizer:
    """rouge-score tokenizer: lowercase, one token per CJK/Thai character, \\w+ runs elsewhere (any script)."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean ROUGE-L F-measure (the best reference per item)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=MultilingualTokenizer())
    scores = [
        max(scorer.score(ref, pred)["rougeL"].fmeasure for ref in refs)
        for pred, refs in zip(predictions, references, strict=True)
    ]
    return sum(scores) / len(scores) if scores else 0.0


def bleu_tokenizer(target_lang: str) -> str:
    return BLEU_TOKENIZERS.get(target_lang, "13a")


def translation_scores(
    hypotheses: Sequence[str], references: Sequence[str], target_lang: str
) -> tuple[dict[str, float], dict[str, str]]:
    """Corpus BLEU (tokenized for the target language) and chrF, with their sacrebleu signatures."""
    try:
        bleu = BLEU(tokenize=bleu_tokenizer(target_lang))
        bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    except (ImportError, RuntimeError) as exc:  # the mecab tokenizers need sacrebleu[ja,ko]
        raise PolyLMError(f"sacrebleu tokenizer {bleu_tokenizer(target_lang)!r} is unusable here ({exc})") from None
    chrf = CHRF()
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    scores = {"bleu": bleu_score.score, "chrf": chrf_score.score}
    return scores, {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
