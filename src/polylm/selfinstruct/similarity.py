"""Language-aware ROUGE-L against a growing pool of instructions, fast enough for pools of 100k and more.

Self-Instruct and Alpaca drop a new instruction whose ROUGE-L F1 against any earlier one reaches 0.7, using
`rouge-score`'s tokenizer, which keeps only `[a-z0-9]`: every Chinese, Japanese, Thai or Korean instruction
becomes empty and scores 0, and comparing one candidate with a pool of n costs n pure-Python LCS tables.

Here a token is one character in the scripts written without spaces between words (Han, kana, Thai, Lao,
Khmer, Myanmar) and in Hangul, whose agglutinated words make poor units, and a lowercased word elsewhere; so
zh/ja/th/ko get character tokens and the other languages words, and a Latin word inside a Japanese sentence
stays one token. F1 = 2·LCS/(m+n), so a pool text can reach the threshold t only if LCS ≥ t·(m+n)/2, and LCS
is at most the multiset overlap of the two token bags. An inverted index gives every pool text's overlap with
the candidate in one numpy pass over the candidate's postings; the exact LCS (bit-parallel, Hyyrö 2004) runs
only on the few texts that pass that bound, best bound first, and stops at the first one at or above t.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections import Counter
from collections.abc import Sequence

import numpy as np

_CHAR_SCRIPTS = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"  # Thai, Lao, Myanmar, Khmer
    "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"  # Hangul
    "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"  # kana, Han
)
_MARKS = "\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed"  # Hebrew and Arabic points inside words
_TOKEN = re.compile(rf"[{_CHAR_SCRIPTS}]|(?:(?![{_CHAR_SCRIPTS}])[\w{_MARKS}])+")
THRESHOLD = 0.7


def tokenize(text: str) -> list[str]:
    """ROUGE tokens: characters of unspaced scripts and Hangul, casefolded words of the others (NFKC first,
    so full-width Latin and compatibility forms match their plain spelling)."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common subsequence, bit-parallel over `a` (one big-int step per item of `b`)."""
    masks: dict[int, int] = {}
    for i, item in enumerate(a):
        masks[item] = masks.get(item, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for item in b:
        match = row & masks.get(item, 0)
        row = (row + match) | (row - match)
    return len(a) - (row & full).bit_count()


def rouge_l(a: Sequence, b: Sequence) -> float:
    """ROUGE-L F1 of two token sequences (what `rouge_score` reports as rougeL fmeasure)."""
    if not a or not b:
        return 0.0
    vocab: dict = {}
    ids_a = [vocab.setdefault(t, len(vocab)) for t in a]
    ids_b = [vocab.setdefault(t, len(vocab)) for t in b]
    return 2 * lcs_length(ids_a, ids_b) / (len(a) + len(b))


class RougeIndex:
    """A pool of token sequences that answers "is any of them at least `threshold` similar to this one?"."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self._vocab: dict[str, int] = {}
        self._docs: list[list[int]] = []
        self._lengths = array("i")
        self._postings: dict[int, tuple[array, array]] = {}
        """token id -> (pool positions holding it, how many times each holds it)."""

    def __len__(self) -> int:
        return len(self._docs)

    def add(self, tokens: Sequence[str]) -> None:
        ids = [self._vocab.setdefault(token, len(self._vocab)) for token in tokens]
        position = len(self._docs)
        self._docs.append(ids)
        self._lengths.append(len(ids))
        for token_id, count in Counter(ids).items():
            docs, counts = self._postings.setdefault(token_id, (array("i"), array("i")))
            docs.append(position)
            counts.append(count)

    def find_similar(self, tokens: Sequence[str]) -> tuple[int, float] | None:
        """(pool position, ROUGE-L F1) of a pool sequence scoring at least the threshold, or None."""
        if not tokens or not self._docs:
            return None
        query = [self._vocab.get(token, -1) for token in tokens]
        overlap = np.zeros(len(self._docs), dtype=np.int32)
        for token_id, count in Counter(query).items():
            if token_id < 0:
                continue
            docs, counts = self._postings[token_id]
            overlap[np.frombuffer(docs, dtype=np.int32)] += np.minimum(np.frombuffer(counts, dtype=np.int32), count)
        totals = np.frombuffer(self._lengths, dtype=np.int32) + len(query)
        bound = 2 * overlap / totals
        candidates = np.flatnonzero(bound >= self.threshold - 1e-12)
        for position in candidates[np.argsort(-bound[candidates], kind="stable")]:
            doc = self._docs[position]
            score = 2 * lcs_length(query, doc) / (len(query) + len(doc))
            if score >= self.threshold - 1e-12:
                return int(position), score
        return None
