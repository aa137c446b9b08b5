"""Shared pieces of the training tests: prepared data from the embedded corpus and a tiny run config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import EMBEDDED_CORPUS
from polylm.cli import main


def prepare_train_data(root: Path) -> Path:
    """Prepared data from the embedded corpus: 4 languages, one bilingual source, 2 curriculum stages."""
    sources = "\n".join(
        f'  - {{name: {lang}, lang: {lang}, paths: ["{EMBEDDED_CORPUS / (lang + ".txt")}"]}}'
        for lang in ("en", "zh", "th", "de")
    )
    de, en = EMBEDDED_CORPUS / "de.txt", EMBEDDED_CORPUS / "en.txt"
    pairs = f'[{{src_file: "{de}", tgt_file: "{en}", src_lang: de, tgt_lang: en}}]'
    config = root / "data.yaml"
    config.write_text(
        f"sources:\n{sources}\n  - {{name: pairs, parallel: {pairs}}}\n"
        "pipeline: {minhash_threshold: null}\ntokenizer: {vocab_size: 1500}\n"
        "curriculum: {total_tokens: 40960, switch_fraction: 0.5, seq_len: 64}\nvalidation_fraction: 0.15\n"
    )
    assert main(["data", "prepare", "--config", str(config), "--out", str(root / "data")]) == 0
    return root / "data"


def config_file(tmp_path: Path, data_dir: Path, **run) -> Path:
    """A 2-layer, 64-wide pretrain config of 12 steps (checkpoint every 4) unless `run` says otherwise."""
    path = tmp_path / "train.yaml"
    run_yaml = ", ".join(f"{k}: {v}" for k, v in {"max_steps": 12, "checkpoint_every": 4, **run}.items())
    path.write_text(
        f"preset: tiny\ndata: {data_dir}\nmodel: {{overrides: {{num_layers: 2, hidden_size: 64, num_heads: 4}}}}\n"
        f"batch: {{global_tokens: 512, micro_batch: 4}}\noptim: {{lr: 0.003, warmup_steps: 3, decay_steps: 12}}\n"
        f"run: {{{run_yaml}}}\n"
    )
    return path


def losses(run_dir: Path) -> list[float]:
    """The per-step losses of a run's metrics.jsonl, in order."""
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """`polylm ARGS` under `torchrun --nproc_per_node=2` (gloo on the CPU), one thread per rank."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "polylm.cli", *args]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
