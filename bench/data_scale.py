"""Data preparation at corpus scale: peak memory and throughput of `polylm data prepare --executor local` at two
corpus sizes, against the in-process path on the same corpus, same run.

    python bench/data_scale.py [--sizes 200 2000] [--inline-at 200] [--workers 2] [--out result.json]

Corpus: synthetic, from ../shared/data/corpora/leipzig_sentences (18 languages). Each document is 3 to 8 random
sentences of one language; 2% repeat an earlier document exactly and 2% repeat one with a word changed, so the
dedup stages have work but keep most. Files hold FILE_MB megabytes of text as `.jsonl.zst`, the same size at every
corpus size: a corpus ten times larger has ten times the files, and the run uses one task per file (datatrove's
usual sharding). Tokenizer: a 32,000-piece BPE trained once on the Leipzig sentences and given to the config, as a
corpus-scale run would (SentencePiece training holds its sample in memory; it is a separate step).

Measured per run: wall seconds, input megabytes (uncompressed UTF-8 text) per second and per core, and the peak
RSS of the whole process tree (the command, datatrove's pool and manager processes), sampled every 0.2 s.
Goals (issue K): peak RSS at the large size <= 1.2x the small size; local executor throughput within 10% of the
in-process path (or better).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zstandard
from _machine import cpu_model

from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
LEIPZIG = REPO.parent / "shared" / "data" / "corpora" / "leipzig_sentences"
FILE_MB = 5
REPEAT_SHARE, NEAR_SHARE = 0.02, 0.02


def leipzig() -> list[Path]:
    """The 18 languages' sentence files (not the LICENSE beside them)."""
    return [path for path in sorted(LEIPZIG.glob("??.txt"))]


def write_corpus(folder: Path, megabytes: int, seed: int = 0) -> tuple[dict[str, list[Path]], int]:
    """Files of FILE_MB MB of documents, languages in turn; returns the files per language and the text bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    sentences = {p.stem: [s for s in p.read_text(encoding="utf-8").splitlines() if s.strip()] for p in leipzig()}
    languages = sorted(sentences)
    rng = random.Random(seed)
    files: dict[str, list[Path]] = {lang: [] for lang in languages}
    total, recent = 0, []
    for number in range(max(len(languages), megabytes // FILE_MB)):  # every language has a file
        lang = languages[number % len(languages)]
        path = folder / f"{lang}-{number:05d}.jsonl.zst"
        written = 0
        with zstandard.ZstdCompressor(level=3).stream_writer(path.open("wb")) as out:
            while written < FILE_MB * 1_000_000:
                roll = rng.random()
                if recent and roll < REPEAT_SHARE:
                    text = rng.choice(recent)
                elif recent and roll < REPEAT_SHARE + NEAR_SHARE:
                    words = rng.choice(recent).split(" ")
                    words[rng.randrange(len(words))] = rng.choice(words)
                    text = " ".join(words)
                else:
                    text = " ".join(rng.choices(sentences[lang], k=rng.randint(3, 8)))
                    recent.append(text)
                    if len(recent) > 2000:  # near the current file only: a bounded pool of earlier documents
                        del recent[:1000]
                data = text.encode("utf-8")
                out.write(json.dumps({"text": text}, ensure_ascii=False).encode("utf-8") + b"\n")
                written += len(data)
        recent = []
        files[lang].append(path)
        total += written
    return {lang: paths for lang, paths in files.items() if paths}, total


def write_config(path: Path, files: dict[str, list[Path]], tokenizer: Path) -> None:
    sources = "\n".join(
        f"  - {{name: web-{lang}, lang: {lang}, paths: [{', '.join(json.dumps(str(p)) for p in paths)}]}}"
        for lang, paths in files.items()
    )
    path.write_text(
        f"sources:\n{sources}\npipeline: {{quality: {{}}, language_id: true, exact_dedup: true, "
        f"minhash_threshold: 0.8}}\ntokenizer: {{path: {tokenizer}}}\nvalidation_fraction: 0.01\n"
        "curriculum: {total_tokens: 4000000, seq_len: 2048}\n",
        encoding="utf-8",
    )


def measure(command: list[str]) -> dict:
    """Wall seconds and peak RSS (bytes) of `command` and all its descendants."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a full pipe would stall the logging tasks
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
        root, peak = psutil.Process(process.pid), 0
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)
        if process.returncode:
            log.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{log.read()[-3000:]}")
    return {"seconds": time.perf_counter() - started, "peak_rss_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000], help="corpus sizes in MB of text")
    parser.add_argument("--inline-at", type=int, default=200, help="also run the in-process path at this size")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--workdir", type=Path, help="keep corpora and outputs here (default: a temp directory)")
    args = parser.parse_args()
    if not LEIPZIG.is_dir():
        raise SystemExit(f"{LEIPZIG} is absent")
    polylm = str(Path(sys.executable).parent / "polylm")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="polylm-data-scale-"))
    tokenizer = workdir / "tokenizer"
    if not (tokenizer / "tokenizer.model").exists():
        train_tokenizer(leipzig(), tokenizer, TokenizerTrainingConfig(vocab_size=32000))
    runs = []
    for size in args.sizes:
        corpus = workdir / f"corpus-{size}"
        files, text_bytes = write_corpus(corpus, size)
        config = workdir / f"data-{size}.yaml"
        write_config(config, files, tokenizer)
        count = sum(map(len, files.values()))
        modes = [("local", ["--executor", "local", "--tasks", str(count), "--workers", str(args.workers)])]
        if size == args.inline_at:
            modes.insert(0, ("in-process", []))
        for mode, extra in modes:
            out = workdir / f"out-{size}-{mode}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            result = measure([polylm, "data", "prepare", "--config", str(config), "--out", str(out), *extra])
            cores = args.workers if mode == "local" else 1
            mb = text_bytes / 1e6
            run = {"size_mb": round(mb, 1), "mode": mode, "files": count, **result,
                   "mb_per_s": mb / result["seconds"], "mb_per_s_per_core": mb / result["seconds"] / cores}  # fmt: skip
            summary = json.loads((out / "data.json").read_text())
            run["kept_documents"] = sum(summary["kept"].values())
            run["drops"] = summary["ledger"]["drops"]
            runs.append(run)
            print(f"{size:>6} MB  {mode:<10} {result['seconds']:8.1f} s  {run['mb_per_s']:6.2f} MB/s  "
                  f"{run['mb_per_s_per_core']:6.2f} MB/s/core  peak RSS {result['peak_rss_bytes'] / 2**30:5.2f} GiB",
                  flush=True)  # fmt: skip
    local = [r for r in runs if r["mode"] == "local"]
    inline = [r for r in runs if r["mode"] == "in-process"]
    report = {
        "bench": "data_scale",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "workers": args.workers,
        "file_mb": FILE_MB,
        "runs": runs,
        "rss_ratio_large_over_small": local[-1]["peak_rss_bytes"] / local[0]["peak_rss_bytes"],
    }
    if inline:
        same = next(r for r in local if r["size_mb"] == inline[0]["size_mb"])
        report["throughput_ratio_local_over_in_process"] = same["mb_per_s"] / inline[0]["mb_per_s"]
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
