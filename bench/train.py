"""Training-step throughput: `polylm pretrain` vs a plain torch loop over transformers' GPT2LMHeadModel, same run.

    python bench/train.py [--steps 12] [--out result.json]

Data: the embedded 18-language corpus prepared by `polylm data prepare` (8,000-piece tokenizer, seq_len 256).
Model: the `tiny` preset's shape (4 layers, hidden 128) at that vocabulary, fp32, CPU. Both sides train on the
same curriculum batches (16 × 256 tokens per step, micro batch 8, AdamW, clip 1.0): polylm through its real
trainer (metrics, per-language loss and all), transformers through the loop anyone would write
(`model(input_ids, labels=...)`, backward, clip, step). Reported: median tokens/s over the steps after two
warm-up steps, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from polylm.cli import main as polylm
from polylm.config import preset
from polylm.data.prepare import open_sampler
from polylm.hf_checkpoint import config_to_hf
from polylm.tokenizer import Tokenizer

CORPUS = Path(__file__).resolve().parents[1] / "src" / "polylm" / "resources" / "corpus"
SEQ_LEN, SAMPLES_PER_STEP, MICRO = 256, 16, 8


def prepare(workdir: Path) -> Path:
    sources = "\n".join(f'  - {{name: {p.stem}, lang: {p.stem}, paths: ["{p}"]}}' for p in sorted(CORPUS.glob("*.txt")))
    config = workdir / "data.yaml"
    config.write_text(
        f"sources:\n{sources}\npipeline: {{minhash_threshold: null}}\ntokenizer: {{vocab_size: 8000}}\n"
        f"curriculum: {{total_tokens: 400000, switch_fraction: 0.5, seq_len: {SEQ_LEN}}}\n"
    )
    assert polylm(["data", "prepare", "--config", str(config), "--out", str(workdir / "data")]) == 0
    return workdir / "data"


def ours(data_dir: Path, workdir: Path, steps: int, overrides: list[str]) -> list[float]:
    config = workdir / "train.yaml"
    config.write_text(
        f"preset: tiny\ndata: {data_dir}\n"
        f"batch: {{global_tokens: {SAMPLES_PER_STEP * SEQ_LEN}, micro_batch: {MICRO}}}\n"
        f"run: {{max_steps: {steps}, checkpoint_every: {steps}}}\n"
    )
    run = workdir / ("run-" + "-".join(overrides))
    assert polylm(["pretrain", "--config", str(config), "--out", str(run), *overrides]) == 0
    return [json.loads(line)["tokens_per_s"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def transformers_loop(data_dir: Path, steps: int) -> list[float]:
    vocab = Tokenizer.from_dir(data_dir / "tokenizer").vocab_size
    model = GPT2LMHeadModel(GPT2Config(**config_to_hf(preset("tiny").replace(vocab_size=vocab)))).train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95)
    )
    batches = open_sampler(data_dir).batches(SAMPLES_PER_STEP)
    speeds = []
    for _ in range(steps):
        started = time.perf_counter()  # drawing the batch is part of the step, as in polylm's own timing
        tokens = torch.from_numpy(np.stack([s.tokens for s in next(batches)]))
        for start in range(0, SAMPLES_PER_STEP, MICRO):
            chunk = tokens[start : start + MICRO]
            loss = model(chunk[:, :-1], labels=chunk[:, 1:].clone()).loss
            (loss * MICRO / SAMPLES_PER_STEP).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        speeds.append(SAMPLES_PER_STEP * SEQ_LEN / (time.perf_counter() - started))
    return speeds


VARIANTS = {
    "fp32 eager": [],
    "fp32 compiled": ["parallel.compile=true"],
    "bf16 eager": ["run.precision=bf16"],
    "bf16 compiled": ["run.precision=bf16", "parallel.compile=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data_dir = prepare(workdir)
        result["transformers_tokens_per_s"] = statistics.median(transformers_loop(data_dir, args.steps)[2:])
        print(f"{'transformers loop (fp32 eager)':<32}{result['transformers_tokens_per_s']:>10.0f} tokens/s")
        for name in args.variants.split(","):
            speed = statistics.median(ours(data_dir, workdir, args.steps, VARIANTS[name])[2:])
            ratio = speed / result["transformers_tokens_per_s"]
            result[f"polylm {name}"] = {"tokens_per_s": speed, "ratio": ratio}
            print(f"{'polylm pretrain, ' + name:<32}{speed:>10.0f} tokens/s   ratio {ratio:.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
