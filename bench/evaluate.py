"""Log-likelihood scoring speed on XCOPA: polylm's evaluator vs lm-evaluation-harness's HF backend, same run.

    python bench/evaluate.py [--data-dir ../shared/data/benchmarks] [--limit 40] [--batch-size 8] [--out r.json]

A PolyLM-shaped model with the real 256,000-token vocabulary (hidden 384, 6 layers, ~110M parameters), fp32 on
CPU, random Megatron-init weights, saved once in the HF layout with a SentencePiece tokenizer trained on the
embedded corpus. Both sides score the same (context, continuation) requests: the XCOPA prompts of PolyLM's six
XCOPA languages, first --limit items each, two requests per item. Timed: the `loglikelihood` call alone (after
one warm-up call on a few requests), not model loading. Also checks that both give the same log-likelihoods.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _machine import cpu_model
from tqdm import tqdm

from polylm import build_model, count_parameters, save_model
from polylm.config import ModelConfig
from polylm.evaluate import EvalConfig
from polylm.evaluate.language_model import LanguageModel
from polylm.evaluate.runner import build_prompts, load_subsets
from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer

CORPUS = Path(__file__).resolve().parents[1] / "src" / "polylm" / "resources" / "corpus"
LANGUAGES = ["id", "it", "th", "tr", "vi", "zh"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/benchmarks")
    parser.add_argument("--limit", type=int, default=40, help="XCOPA items per language")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    config = ModelConfig(name="bench-110m", hidden_size=384, num_layers=6, num_heads=6, max_position_embeddings=512)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tokenizer(sorted(CORPUS.glob("*.txt")), Path(tmp) / "tok", TokenizerTrainingConfig(8000))
        model = build_model(config, seed=0).eval()
        model_dir = save_model(model, Path(tmp) / "model")
        tokenizer.save(model_dir)  # 8,000 pieces under a 256,000-row embedding: every id is valid for both
        eval_config = EvalConfig(
            model=str(model_dir), tasks=["xcopa"], languages=LANGUAGES, data_dir=args.data_dir, limit=args.limit
        )
        subsets = load_subsets(eval_config)
        build_prompts(subsets, 0, eval_config.seed)
        pairs = [pair for s in subsets for doc_pairs in s.prompts for pair in doc_pairs]
        ours = LanguageModel(model, tokenizer, args.batch_size, tokenizer.eos_id)
        harness = HFLM(pretrained=str(model_dir), batch_size=args.batch_size, device="cpu", dtype="float32")
        instances = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]

        def run_ours(requests):
            return ours.loglikelihood([r.args for r in requests], tqdm(disable=True))

        def run_harness(requests):
            return [ll for ll, _ in harness.loglikelihood(requests, disable_tqdm=True)]

        timings, results = {}, {}
        for name, run in (("polylm", run_ours), ("lm-eval HFLM", run_harness)):
            run(instances[:16])  # warm-up
            start = time.perf_counter()
            results[name] = run(instances)
            timings[name] = time.perf_counter() - start
    difference = max(abs(a - b) for a, b in zip(results["polylm"], results["lm-eval HFLM"], strict=True))
    report = {
        "machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "parameters": count_parameters(config),
        "requests": len(pairs),
        "batch_size": args.batch_size,
        "requests_per_s": {name: len(pairs) / seconds for name, seconds in timings.items()},
        "ratio": timings["lm-eval HFLM"] / timings["polylm"],
        "max_abs_loglikelihood_difference": difference,
    }
    print(f"model: {report['parameters']:,} parameters, vocab {config.vocab_size}, fp32, {report['machine']}")
    print(f"{len(pairs)} XCOPA log-likelihood requests ({', '.join(LANGUAGES)}), batch size {args.batch_size}")
    for name, rate in report["requests_per_s"].items():
        print(f"{name:<14}{rate:>10.1f} requests/s")
    print(f"ratio {report['ratio']:.2f}, max |log-likelihood difference| {difference:.2e}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
