"""Tokenizing into shards: polylm's writer vs raw sentencepiece on the same text, same run.

    python bench/data.py [--mb 20] [--vocab 32000] [--repeats 3] [--out result.json]

Text: the Leipzig sentences of ../shared/data/corpora/leipzig_sentences (18 languages) when present, else the
embedded corpus (src/polylm/resources/corpus), cut into documents of 8 lines and repeated to --mb megabytes.
Tokenizer: a --vocab-piece BPE trained once on the distinct lines (repeats would only scale its counts) and
cached in the temp directory. Measured: the baseline `sp.encode(list_of_512_texts)` (ids as lists, what anyone
would write), the same with `return_type="numpy"` (what the writer calls) and with 1 thread, then
`write_shards` with 1 and 2 workers, files, sha256 and fsync included. Each figure is the best of --repeats,
run interleaved so a noisy neighbour hits all of them alike. The overhead is write_shards' time over the
baseline's; the goal is at most 10% for 1 worker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sentencepiece as spm
from _machine import cpu_model

from polylm.data.documents import Document, Ledger
from polylm.data.shards import write_shards
from polylm.tokenizer import Tokenizer, TokenizerTrainingConfig, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
LEIPZIG = REPO.parent / "shared" / "data" / "corpora" / "leipzig_sentences"
EMBEDDED = REPO / "src" / "polylm" / "resources" / "corpus"
BATCH = 512
LINES_PER_DOC = 8


def corpus_files() -> tuple[str, list[Path]]:
    for name, folder in (("leipzig_sentences", LEIPZIG), ("embedded corpus", EMBEDDED)):
        files = sorted(folder.glob("*.txt"))
        if files:
            return name, files
    raise SystemExit(f"no text found in {LEIPZIG} or {EMBEDDED}")


def documents(files: list[Path], megabytes: float) -> list[Document]:
    """Documents of LINES_PER_DOC lines, language by language, repeated until the text reaches `megabytes`."""
    base = []
    for path in files:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for start in range(0, len(lines), LINES_PER_DOC):
            text = "\n".join(lines[start : start + LINES_PER_DOC])
            base.append(Document(text, path.stem, "bench", f"{path.name}:{start + 1}"))
    docs: list[Document] = []
    size, target, repeat = 0, megabytes * 1e6, 0
    while size < target:
        for doc in base:
            docs.append(Document(doc.text, doc.lang, doc.source, f"{doc.id}#{repeat}"))
            size += len(doc.text.encode("utf-8"))
            if size >= target:
                break
        repeat += 1
    return docs


def cached_tokenizer(files: list[Path], vocab: int) -> tuple[Tokenizer, bool]:
    """(tokenizer, reused?): trained on `files` once per content, vocabulary and sentencepiece version."""
    key = hashlib.sha256(f"{vocab} {spm.__version__}".encode())
    for path in files:
        key.update(path.read_bytes())
    folder = Path(tempfile.gettempdir()) / "polylm-bench-data" / f"tokenizer-{key.hexdigest()[:16]}"
    if (folder / "tokenizer.model").is_file():
        return Tokenizer.from_dir(folder), True
    config = TokenizerTrainingConfig(vocab_size=vocab, num_threads=os.cpu_count() or 1)
    return train_tokenizer(files, folder, config), False


def dedup_rate(docs: list[Document]) -> float | None:
    """MinHash dedup in docs/s on the same documents, or None while polylm.data.filters has no MinHashDedup.

    Called the way `polylm data prepare` runs it. The text is repeated, so most documents are duplicates.
    """
    try:
        from polylm.data.filters import MinHashDedup, run_steps
    except ImportError:
        return None
    start = time.perf_counter()
    for _ in run_steps(iter(docs), [MinHashDedup(threshold=0.8)], Ledger()):
        pass
    return len(docs) / (time.perf_counter() - start)


def best_times(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Best wall time of each run over `repeats` rounds, the runs interleaved within a round."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="megabytes of text (UTF-8)")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()

    corpus, files = corpus_files()
    docs = documents(files, args.mb)
    texts = [doc.text for doc in docs]
    text_bytes = sum(len(text.encode("utf-8")) for text in texts)
    start = time.perf_counter()
    tokenizer, reused = cached_tokenizer(files, args.vocab)
    trained = "reused from cache" if reused else f"trained in {time.perf_counter() - start:.1f} s"
    sp = tokenizer.sp
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    tokens = sum(len(ids) for batch in batches for ids in sp.encode(batch)) + len(texts)  # + one </s> each

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "shards"

        def ours(workers: int, subset: list[Document] = docs) -> Callable[[], None]:
            return lambda: write_shards(subset, tokenizer.model_file.parent, out, workers=workers, progress=False)

        runs = {
            "sentencepiece encode (lists)": lambda: [sp.encode(batch) for batch in batches],
            "sentencepiece encode (numpy)": lambda: [sp.encode(batch, return_type="numpy") for batch in batches],
            "sentencepiece encode, 1 thread": lambda: [sp.encode(batch, num_threads=1) for batch in batches],
            "write_shards, 1 worker": ours(1),
            "write_shards, 2 workers": ours(2),
        }
        seconds = best_times(runs, args.repeats)
        startup = best_times({"1 worker": ours(1, docs[:1]), "2 workers": ours(2, docs[:1])}, args.repeats)
        written = write_shards(docs, tokenizer.model_file.parent, out, progress=False)
        assert written["tokens"] == tokens, (written["tokens"], tokens)
    minhash = dedup_rate(docs)

    baseline = seconds["sentencepiece encode (lists)"]
    report = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "sentencepiece": spm.__version__,
        "numpy": np.__version__,
        "corpus": corpus,
        "documents": len(docs),
        "text_mb": text_bytes / 1e6,
        "tokens": tokens,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": trained,
        "repeats": args.repeats,
        "runs": {
            name: {
                "seconds": value,
                "mb_per_s": text_bytes / 1e6 / value,
                "tokens_per_s": tokens / value,
                "overhead_vs_baseline_pct": 100 * (value / baseline - 1),
            }
            for name, value in seconds.items()
        },
        "pool_startup_seconds": startup["2 workers"] - startup["1 worker"],
        "minhash_docs_per_s": minhash,
    }
    print(f"{report['machine']}; sentencepiece {spm.__version__}")
    print(f"text: {corpus}, {len(docs):,} documents, {text_bytes / 1e6:.1f} MB, {tokens:,} tokens")
    print(f"tokenizer: {tokenizer.vocab_size:,} pieces, {trained}; best of {args.repeats}")
    print(f"{'run':<32}{'s':>8}{'MB/s':>9}{'Mtok/s':>9}{'vs baseline':>13}")
    for name, row in report["runs"].items():
        figures = f"{row['seconds']:>8.2f}{row['mb_per_s']:>9.2f}{row['tokens_per_s'] / 1e6:>9.2f}"
        print(f"{name:<32}{figures}{row['overhead_vs_baseline_pct']:>+12.1f}%")
    print(f"pool start-up (2 spawned workers, one document): {report['pool_startup_seconds']:.2f} s")
    print("minhash: not available" if minhash is None else f"minhash dedup: {minhash:,.0f} docs/s")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
