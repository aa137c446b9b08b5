"""Cleaning steps: generators over documents that drop with `ledger.drop("STEP:RULE", doc)`, as datatrove does.

Each step has a `name` and is called as `step(docs, ledger)`; `run_steps` chains them. Steps keep state across
calls (the dedup steps remember what they saw), so one instance shared by several sources dedups across them.

Scripts written without spaces between words (Chinese, Japanese, Thai, also Lao, Khmer, Burmese) break
word-based rules: a whole Chinese sentence is one "word" (Thai puts spaces between phrases only). They are
recognised by the declared language or, whatever the declared language, by the share of such characters; for
them the repetition rules and MinHash work on characters, and the mean-word-length rule is skipped. Korean is
written with spaces, so the quality rules treat it as a spaced script, but its words are agglutinated, so
MinHash shingles it by characters too.
"""

from __future__ import annotations

import copy
import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import TYPE_CHECKING

from polylm.data.documents import POLYLM_LANGUAGES, Document, Ledger
from polylm.errors import PolyLMError

if TYPE_CHECKING:
    from datasketch import MinHash

_SOUTHEAST_ASIAN = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]")  # Thai, Lao, Myanmar, Khmer
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")  # kana, Han
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_SPACE = re.compile(r"\s")
CHARS_PER_WORD = {"zh": 2, "ja": 2, "th": 5, "lo": 5, "km": 5, "my": 5}
"""Unspaced languages, and how many characters stand for one word in their word-based rules: a repetition
n-gram of n words becomes one of n * CHARS_PER_WORD characters, and a document's word count is its characters
divided by it. Chinese words average 1.5 to 2 characters; Thai ones 4 to 5 code points, vowel and tone marks
included (with 4, the repetition rules dropped 4.5% of the Leipzig Thai sample, mostly web pages repeating
their titles; with 5, 2%)."""
SCRIPT_SHARE = 0.5
"""A document whose non-space characters are at least this share of one unspaced script is treated as written
in it, whatever its declared language (and likewise for Hangul in MinHash)."""
_ELLIPSIS = re.compile(r"(?:…|\.\.\.)+")
_BULLETS = frozenset("•‣◦▪▫●○■□►▶▸➢➤")


STEP_ORDER = ("normalize", "quality", "language", "exact_dedup", "near_dedup")
"""The order in which a document meets the steps (`polylm data stats` lists the funnel in it)."""


class Filter:
    """A step that judges one document at a time (datatrove's BaseFilter): a subclass writes only `judge`, its
    rule; the loop and the accounting live here. Each document entering the step is counted under `step` (its
    line in `polylm data stats`), then either kept (counted) or dropped as `name:REASON`."""

    name: str
    """The prefix of this step's drop reasons (`quality:too_short`)."""
    step: str = ""
    """The step's name in the funnel; default: `name`."""

    def judge(self, doc: Document) -> Document | str:
        """The document to pass on (changed or not), or the reason it is dropped."""
        raise NotImplementedError

    def __call__(self, docs: Iterable[Document], ledger: Ledger) -> Iterator[Document]:
        step = self.step or self.name
        for doc in docs:
            ledger.entered[step] += 1
            verdict = self.judge(doc)
            if isinstance(verdict, str):
                ledger.drop(f"{self.name}:{verdict}", doc, step)
            else:
                ledger.kept_by[step] += 1
                yield verdict


def run_steps(docs: Iterable[Document], steps: Sequence[Filter], ledger: Ledger) -> Iterator[Document]:
    """Chain the steps lazily: one document flows through all of them before the next is read."""
    stream = iter(docs)
    for step in steps:
        stream = step(stream, ledger)
    return stream


def _script_share(text: str, script: re.Pattern) -> float:
    visible = len(text) - len(_SPACE.findall(text))
    return len(script.findall(text)) / visible if visible else 0.0


def chars_per_word(doc: Document) -> int | None:
    """How many characters make a word (CHARS_PER_WORD) by language or script; None for a spaced script."""
    if doc.lang in CHARS_PER_WORD:
        return CHARS_PER_WORD[doc.lang]
    if _script_share(doc.text, _CJK) >= SCRIPT_SHARE:
        return CHARS_PER_WORD["zh"]
    return CHARS_PER_WORD["th"] if _script_share(doc.text, _SOUTHEAST_ASIAN) >= SCRIPT_SHARE else None


def _char_shingled(doc: Document) -> bool:
    """Unspaced scripts and Korean, whose agglutinated words make poor shingles."""
    return doc.lang == "ko" or chars_per_word(doc) is not None or _script_share(doc.text, _HANGUL) >= SCRIPT_SHARE


class NormalizeNFC(Filter):
    """Unicode NFC and outer whitespace stripped, so that later hashing and rules see one spelling of a text."""

    name = "normalize"

    def judge(self, doc: Document) -> Document | str:
        text = unicodedata.normalize("NFC", doc.text).strip()
        if not text:
            return "empty"
        return doc if text == doc.text else replace(doc, text=text)


@dataclass
class QualityConfig:
    """Heuristic thresholds (Gopher, Rae et al. 2021, as in datatrove), set so that short one-sentence
    documents of all 18 languages pass (>= 97% of each Leipzig sample) while junk does not."""

    min_chars: int = 8
    """Counted after stripping; 8 keeps short Korean sentences (a Hangul block is a syllable)."""
    max_chars: int = 1_000_000
    max_dup_line_share: float = 0.3
    """Share of a multi-line document's lines that repeat an earlier line (Gopher: 0.3)."""
    top_ngram_max: tuple[float, ...] = (0.20, 0.18, 0.16)
    """For word 2-, 3-, 4-grams: largest share of characters the most frequent n-gram may cover (Gopher values)."""
    top_ngram_min_count: int = 3
    """The top n-gram counts only from this many occurrences: in a one-sentence document a phrase said twice
    ("the dog saw the cat, and the cat saw the dog") already covers 20%; Gopher only saw documents of 50 words
    or more. With 2, the rule dropped 2% of Leipzig English and 6.6% of Vietnamese sentences."""
    dup_ngram_max: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)
    """For word 5- to 10-grams: largest share of characters inside n-grams that occur more than once (Gopher)."""
    dup_ngram_min_words: int = 50
    """Documents shorter than this (Gopher's minimum document length) skip the dup_ngram rule."""
    max_symbol_ratio: float = 0.1
    """`#`, ellipses (a run of them counts once) and bullets per word (Gopher: 0.1 for # and for ellipses)."""
    symbol_min_words: int = 10
    """The symbol ratio divides by at least this many words, so one ellipsis cannot drop a short sentence."""
    max_digit_ratio: float = 0.4
    """Digits among non-space characters: timestamps and tables of numbers, not prose."""
    min_letter_ratio: float = 0.4
    """Letters and combining marks among non-space characters: below it, a line is mostly punctuation or
    numbers."""
    min_mean_word_length: float = 2.0
    max_mean_word_length: float = 15.0
    """Mean word length bounds, spaced scripts only (Gopher: 3 to 10; Korean and Vietnamese words are shorter,
    German and Turkish ones longer, in short sentences)."""

    def __post_init__(self) -> None:
        self.top_ngram_max, self.dup_ngram_max = tuple(self.top_ngram_max), tuple(self.dup_ngram_max)
        ratios = {
            "max_dup_line_share": self.max_dup_line_share,
            "max_symbol_ratio": self.max_symbol_ratio,
            "max_digit_ratio": self.max_digit_ratio,
            "min_letter_ratio": self.min_letter_ratio,
            **{f"top_ngram_max[{i}]": v for i, v in enumerate(self.top_ngram_max)},
            **{f"dup_ngram_max[{i}]": v for i, v in enumerate(self.dup_ngram_max)},
        }
        for key, value in ratios.items():
            if not 0 <= value <= 1:
                raise PolyLMError(f"quality config: {key} must be between 0 and 1, got {value}")
        if self.min_chars > self.max_chars or self.min_mean_word_length > self.max_mean_word_length:
            raise PolyLMError("quality config: a min_ threshold is larger than its max_ one")


def _ngrams(units: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]


def _top_ngram_share(units: list[str], n: int, min_count: int, total: int) -> float:
    grams = Counter(_ngrams(units, n))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return count * sum(map(len, gram)) / total if count >= min_count else 0.0


def _dup_ngram_share(units: list[str], n: int, total: int) -> float:
    grams = _ngrams(units, n)
    counts = Counter(grams)
    covered = [False] * len(units)
    for start, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[start : start + n] = [True] * n
    return sum(len(unit) for unit, inside in zip(units, covered, strict=True) if inside) / total


class QualityFilter(Filter):
    """Gopher-style quality and repetition rules; drops as `quality:RULE` with the first rule that fails."""

    name = "quality"

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()

    def rule(self, doc: Document) -> str | None:
        """The first failing rule's name, or None when the document is kept."""
        c, text = self.config, doc.text.strip()
        if len(text) < c.min_chars:
            return "too_short"
        if len(text) > c.max_chars:
            return "too_long"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) > 1 and 1 - len(set(lines)) / len(lines) > c.max_dup_line_share:
            return "dup_lines"
        visible = [ch for ch in text if not ch.isspace()]
        if sum(ch.isdigit() for ch in visible) > c.max_digit_ratio * len(visible):
            return "digits"
        if sum(unicodedata.category(ch)[0] in "LM" for ch in visible) < c.min_letter_ratio * len(visible):
            return "letters"
        per_word = chars_per_word(doc)
        units, scale = (visible, per_word) if per_word else (text.split(), 1)
        words = len(units) / scale
        symbols = text.count("#") + len(_ELLIPSIS.findall(text)) + sum(ch in _BULLETS for ch in visible)
        if symbols > c.max_symbol_ratio * max(words, c.symbol_min_words):
            return "symbols"
        if units and not per_word:
            mean = sum(map(len, units)) / len(units)
            if not c.min_mean_word_length <= mean <= c.max_mean_word_length:
                return "word_length"
        total = sum(map(len, units))
        for n, limit in enumerate(c.top_ngram_max, start=2):
            if _top_ngram_share(units, n * scale, c.top_ngram_min_count, total) > limit:
                return "top_ngram"
        if words >= c.dup_ngram_min_words:
            for n, limit in enumerate(c.dup_ngram_max, start=5):
                if _dup_ngram_share(units, n * scale, total) > limit:
                    return "dup_ngram"
        return None

    def judge(self, doc: Document) -> Document | str:
        return self.rule(doc) or doc


@cache
def _full_identifier():
    """py3langid over all its languages, loaded once per process (0.6 s) and only when first needed."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@cache
def _identifier(languages: tuple[str, ...]):
    """A shallow copy of the full model restricted to `languages` (restricting rebinds, it does not mutate)."""
    full = _full_identifier()
    unknown = sorted(set(languages) - set(full.labels))
    if unknown:
        raise PolyLMError(f"language filter: py3langid does not know {', '.join(unknown)}")
    identifier = copy.copy(full)
    identifier.set_languages(list(languages))
    return identifier


class LanguageFilter(Filter):
    """Drop documents whose detected language is not the declared one (`language:mismatch`).

    py3langid restricted to `languages` (about 0.996 accuracy on PolyLM's 18, environment.md §4; its codes are
    ISO 639-1 like ours, `he` and `id` included, so no mapping is needed). A document declared in a language
    outside the set is passed through unchecked: the restricted model could only mislabel it. With
    `min_confidence`, a document whose detection probability (over the restricted set) is lower is dropped as
    `language:low_confidence`.
    """

    name = "language"

    def __init__(self, languages: Sequence[str] = POLYLM_LANGUAGES, min_confidence: float | None = None) -> None:
        if min_confidence is not None and not 0 <= min_confidence <= 1:
            raise PolyLMError(f"language filter: min_confidence must be between 0 and 1, got {min_confidence}")
        self.languages = tuple(sorted(set(languages)))
        self.min_confidence = min_confidence

    def detect(self, text: str) -> tuple[str, float]:
        """(language, probability among the filter's languages)."""
        return _identifier(self.languages).classify(text)

    def judge(self, doc: Document) -> Document | str:
        if doc.lang not in self.languages:
            return doc
        lang, confidence = self.detect(doc.text)
        if lang != doc.lang:
            return "mismatch"
        if self.min_confidence is not None and confidence < self.min_confidence:
            return "low_confidence"
        return doc


class ExactDedup(Filter):
    """Drop a document whose text was seen before (`dedup:exact`), keeping the first.

    The key is a 128-bit hash of the NFC text with whitespace runs collapsed: copies that differ only in
    spacing or line breaks are one document. Case is kept (a casing variant is a different text; MinHash,
    which folds case, catches it as a near-duplicate). Memory: one 16-byte digest per kept document.
    """

    name = "dedup"
    step = "exact_dedup"

    def __init__(self) -> None:
        self.seen: set[bytes] = set()

    @staticmethod
    def key(text: str) -> bytes:
        canonical = " ".join(unicodedata.normalize("NFC", text).split())
        return hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).digest()

    def judge(self, doc: Document) -> Document | str:
        key = self.key(doc.text)
        if key in self.seen:
            return "exact"
        self.seen.add(key)
        return doc


_DIGITS = re.compile(r"\d")


def _simplify(text: str) -> str:
    """Case folded, punctuation and symbols -> space, digits -> 0 (by Unicode category: regex \\w would also
    remove Thai and Devanagari vowel signs)."""
    folded = text.casefold()
    return _DIGITS.sub("0", "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in folded))


class MinHashDedup(Filter):
    """Drop near-duplicates (`dedup:near`) in one pass: a document whose MinHash LSH finds an earlier kept
    document with estimated Jaccard similarity around `threshold` or more is dropped, else it is indexed.

    Text is simplified as datatrove does (case folded, punctuation removed, digits -> 0, whitespace collapsed);
    shingles are `shingle` consecutive words, or characters for unspaced scripts and Korean (a word shingle
    would make a Chinese sentence one token). A document shorter than one shingle is one shingle.

    Why not datatrove's MinHash: it is four stages (signatures, buckets, clustering, filtering) writing
    intermediate files to disk, designed to spread billions of documents over a cluster of tasks. On one
    machine with corpora of millions of documents, an in-memory LSH index (datasketch) does the same
    banding in a single streaming pass, with no intermediate files and the ledger counting each drop. Memory
    grows with the number of kept documents (about 3 KB each with the defaults, measured on Leipzig: 3 GB per
    million); for corpora much larger than memory, datatrove's disk-based stages are the tool.
    """

    name = "dedup"
    step = "near_dedup"

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle: int = 5, seed: int = 1) -> None:
        from datasketch import MinHash, MinHashLSH  # 0.6 s to import: only when dedup runs

        if not 0 < threshold <= 1 or shingle < 1 or num_perm < 2:
            raise PolyLMError(
                f"MinHash dedup: need 0 < threshold <= 1, shingle >= 1, num_perm >= 2; "
                f"got {threshold}, {shingle}, {num_perm}"
            )
        self.shingle = shingle
        self.index = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.empty = MinHash(num_perm=num_perm, seed=seed)
        """Copied for each document: the random permutations are drawn once, not per document."""
        self.count = 0

    def shingles(self, doc: Document) -> set[bytes]:
        simple = _simplify(doc.text)
        if _char_shingled(doc):
            units, joiner = [ch for ch in simple if not ch.isspace()], ""
        else:
            units, joiner = simple.split(), " "
        if len(units) <= self.shingle:
            return {joiner.join(units).encode("utf-8") or doc.text.encode("utf-8")}
        return {joiner.join(units[i : i + self.shingle]).encode("utf-8") for i in range(len(units) - self.shingle + 1)}

    def signature(self, doc: Document) -> MinHash:
        minhash = self.empty.copy()
        minhash.update_batch(sorted(self.shingles(doc)))
        return minhash

    def judge(self, doc: Document) -> Document | str:
        minhash = self.signature(doc)
        if self.index.query(minhash):
            return "near"
        self.index.insert(self.count, minhash)
        self.count += 1
        return doc
