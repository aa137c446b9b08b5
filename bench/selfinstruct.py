"""ROUGE-L filtering speed: polylm's indexed filter vs `rouge-score` as Alpaca uses it, on a 100k pool.

    python bench/selfinstruct.py [--pool 100000] [--candidates 400] [--baseline-seconds 30] [--out result.json]

Per language (es: words; ja, th: characters), a pool of --pool instruction-sized snippets made of fragments cut
at random from real text: MultiAlpaca's es and ja files and the Leipzig Thai sentences in ../shared/data (es: 4
fragments of 2 to 4 words, ja: 5 of 4 to 8 characters, th: 6 of 4 to 9, about the median instruction of each;
fragments rather than windows, since 100k windows of the small Thai text would overlap each other). Candidates
are new snippets, every third one a pool snippet with one token changed (a near-duplicate to drop).

Measured, per candidate: tokenize, decide (any pool text with ROUGE-L F1 >= 0.7?), and add it to the pool when
kept. Ours: `RougeIndex.find_similar`. Baseline: Alpaca's loop, `rouge_scorer._score_lcs(candidate, p)` for
every pre-tokenized pool text p, with the same per-language tokenizer (rouge-score's own keeps only [a-z0-9]
and scores 0 on ja and th), in one process; it runs candidates until --baseline-seconds have passed (at least
one), and its decisions are checked against ours on the same candidates. Building the index is timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

from _machine import cpu_model
from rouge_score import rouge_scorer

from polylm.selfinstruct.similarity import THRESHOLD, RougeIndex, tokenize

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SOURCES = {  # file, joiner, (fragments per snippet, fragment length bounds in tokens)
    "es": (SHARED / "instructions" / "multialpaca" / "es.jsonl", " ", (4, 2, 4)),
    "ja": (SHARED / "instructions" / "multialpaca" / "ja.jsonl", "", (5, 4, 8)),
    "th": (SHARED / "corpora" / "leipzig_sentences" / "th.txt", "", (6, 4, 9)),
}


def token_stream(path: Path) -> list[str]:
    """Every token of the file's text (all fields of JSONL records)."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        text = "\n".join(str(value) for row in rows for value in row.values() if value)
    else:
        text = path.read_text(encoding="utf-8")
    return tokenize(text)


def snippets(tokens: list[str], joiner: str, spec: tuple[int, int, int], count: int, rng: random.Random) -> list[str]:
    """`count` texts of `pieces` fragments of `lo`..`hi` consecutive tokens, each from a random place: the
    language's token statistics, without the long overlaps that windows of one small text would share."""
    pieces, lo, hi = spec
    out = []
    for _ in range(count):
        parts = []
        for _ in range(pieces):
            length = rng.randint(lo, hi)
            start = rng.randrange(len(tokens) - length)
            parts.extend(tokens[start : start + length])
        out.append(joiner.join(parts))
    return out


def near_duplicate(text: str, joiner: str, vocabulary: list[str], rng: random.Random) -> str:
    tokens = list(text) if joiner == "" else text.split(joiner)
    tokens[rng.randrange(len(tokens))] = rng.choice(vocabulary)
    return joiner.join(tokens)


def ours(pool: list[str], candidates: list[str]) -> tuple[float, float, list[bool]]:
    """(index build seconds, filtering seconds, dropped? per candidate)."""
    index = RougeIndex(THRESHOLD)
    start = time.perf_counter()
    for text in pool:
        index.add(tokenize(text))
    built = time.perf_counter()
    dropped = []
    for text in candidates:
        tokens = tokenize(text)
        hit = index.find_similar(tokens) is not None
        if not hit:
            index.add(tokens)
        dropped.append(hit)
    return built - start, time.perf_counter() - built, dropped


def baseline(pool: list[str], candidates: list[str], budget: float) -> tuple[float, list[bool]]:
    """(seconds, dropped? per candidate run) for as many candidates as fit in `budget` seconds (at least one)."""
    pool_tokens = [tokenize(text) for text in pool]
    dropped = []
    start = time.perf_counter()
    for text in candidates:
        tokens = tokenize(text)
        best = max(rouge_scorer._score_lcs(tokens, other).fmeasure for other in pool_tokens)
        hit = best >= THRESHOLD
        if not hit:
            pool_tokens.append(tokens)
        dropped.append(hit)
        if time.perf_counter() - start >= budget:
            break
    return time.perf_counter() - start, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=400)
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    parser.add_argument("--languages", default="es,ja,th")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    report = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "pool": args.pool,
        "threshold": THRESHOLD,
        "languages": {},
    }
    for lang in args.languages.split(","):
        path, joiner, spec = SOURCES[lang]
        rng = random.Random(args.seed)
        tokens = token_stream(path)
        pool = snippets(tokens, joiner, spec, args.pool, rng)
        vocabulary = sorted(set(tokens))
        fresh = snippets(tokens, joiner, spec, args.candidates, rng)
        candidates = [
            near_duplicate(rng.choice(pool), joiner, vocabulary, rng) if i % 3 == 0 else text
            for i, text in enumerate(fresh)
        ]
        build, seconds, decisions = ours(pool, candidates)
        base_seconds, base_decisions = baseline(pool, candidates, args.baseline_seconds)
        ours_rate = len(candidates) / seconds
        base_rate = len(base_decisions) / base_seconds
        report["languages"][lang] = {
            "source": str(path.relative_to(REPO.parent)),
            "mean_tokens": sum(len(tokenize(t)) for t in pool[:2000]) / 2000,
            "index_build_seconds": round(build, 2),
            "ours_candidates": len(candidates),
            "ours_dropped": sum(decisions),
            "ours_candidates_per_s": round(ours_rate, 1),
            "baseline_candidates": len(base_decisions),
            "baseline_candidates_per_s": round(base_rate, 3),
            "speedup": round(ours_rate / base_rate, 1),
            "decisions_agree": decisions[: len(base_decisions)] == base_decisions,
        }
        print(lang, json.dumps(report["languages"][lang]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
