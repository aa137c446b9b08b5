"""Decoding speed: polylm vs transformers on the same weights, same run, across model widths.

    python bench/generate.py [--sizes 384,1024,2048,5120] [--new-tokens 32] [--repeats 2] [--out result.json]

PolyLM-shaped models (GPT-2 layout, the real 256,000-token vocabulary; hidden 384 with 6 layers, the wider ones
with 2 layers and 5120 with 1, since the 256K-row output layer is what changes the picture), fp32 on CPU, saved
once in the HF layout and loaded by both libraries. Each width runs with two kinds of weights:
- `initial`: Megatron init (N(0, 0.006)). Every logit is alike, so the int8 greedy shortcut can rarely decide;
- `trained-like`: the same model reshaped to look like a trained one at its output: embeddings scaled to a logit
  std of about 8, eight hidden channels about 15x their row's rms after the final LayerNorm (trained LMs' outlier
  features), and a last MLP whose few active units write token embeddings, so each step has a clear favourite
  (median top-1 probability about 0.45). Gemma 3 270M measured on real text: logit std 6-8, outliers 13x rms,
  top-1 probability 0.23.
Greedy tokens/s at batch 1 and 8 and, on the first width, the latency of a 4-beam search; both must produce the
same tokens. Ratios are polylm / transformers for throughput and transformers / polylm for latency (> 1: polylm
is faster). "decided" is the share of greedy steps the int8 shortcut settled without the full product. Each
figure is the best of --repeats runs after one warm-up.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _machine import cpu_model
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from polylm import GenerationConfig, build_model, count_parameters, save_model
from polylm.config import ModelConfig
from polylm.generate import generate
from polylm.generate.greedy_head import int8_argmax_head
from polylm.inference import prepare_for_inference
from polylm.model import PolyLM

LAYERS = {384: 6, 5120: 1}
"""Layers per width (2 for the others): few are enough, the output layer is what the widths stress."""


def best_time(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def make_trained_like(model: PolyLM, seed: int = 0) -> None:
    """Reshape random weights so that the output layer sees what a trained model gives it (see the docstring)."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    with torch.no_grad():
        model.wte.weight.mul_(6.0 / (math.sqrt(config.hidden_size) * config.init_std))
        outliers = torch.randperm(config.hidden_size, generator=generator)[:8]
        model.ln_f.weight[outliers] = 12.0
        mlp = model.h[-1].mlp
        pre_activation_std = float(mlp.c_fc.weight.std()) * math.sqrt(config.hidden_size)
        mlp.c_fc.bias.fill_(-2.65 * pre_activation_std)  # about 0.4% of the units pass the GELU
        tokens = torch.randint(3, config.vocab_size, (mlp.c_proj.weight.shape[1],), generator=generator)
        directions = model.wte.weight[tokens]
        directions /= directions.norm(dim=1, keepdim=True)
        mlp.c_proj.weight.copy_(directions.T * (8.0 / pre_activation_std))


def bench_model(ours: PolyLM, prompts: torch.Tensor, args: argparse.Namespace, beam: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        save_model(ours, tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    prepare_for_inference(ours)  # what TextGenerator (CLI, pipeline, server) does to every model it serves
    prompt_length = prompts.shape[1]

    def ours_run(batch: int, **options):
        config = GenerationConfig(max_new_tokens=args.new_tokens, eos_token_id=None, **options)
        return [g.token_ids for row in generate(ours, prompts[:batch].tolist(), config) for g in row]

    def hf_run(batch: int, **options):
        with torch.inference_mode():
            out = hf.generate(
                prompts[:batch],
                attention_mask=torch.ones_like(prompts[:batch]),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=0,
                do_sample=False,
                **options,
            )
        return out[:, prompt_length:].tolist()

    cases = [("greedy batch 1", 1, {}), ("greedy batch 8", 8, {})]
    if beam:
        cases.append(("beam-4 batch 1", 1, {"num_beams": 4}))
    rows = {}
    for name, batch, options in cases:
        same = ours_run(batch, **options) == hf_run(batch, **options)
        head = int8_argmax_head(ours)
        before = (head.decided, head.undecided) if head else (0, 0)
        ours_seconds = best_time(lambda b=batch, o=options: ours_run(b, **o), args.repeats)
        decided = (head.decided - before[0], head.undecided - before[1]) if head else (0, 0)
        hf_seconds = best_time(lambda b=batch, o=options: hf_run(b, **o), args.repeats)
        tokens = batch * args.new_tokens
        if options:
            row = {"polylm_seconds": ours_seconds, "transformers_seconds": hf_seconds}
        else:
            row = {"polylm_tokens_per_s": tokens / ours_seconds, "transformers_tokens_per_s": tokens / hf_seconds}
            row["decided"] = decided[0] / max(sum(decided), 1)
        row["ratio"] = hf_seconds / ours_seconds
        row["same_tokens"] = same
        rows[name] = row
    return rows


def show(width: int, kind: str, rows: dict) -> None:
    for name, row in rows.items():
        if "polylm_seconds" in row:
            figures = f"{row['polylm_seconds']:>10.2f} s {row['transformers_seconds']:>12.2f} s {'':>8}"
        else:
            figures = (
                f"{row['polylm_tokens_per_s']:>8.1f} tok/s {row['transformers_tokens_per_s']:>8.1f} tok/s "
                f"{row['decided']:>8.0%}"
            )
        print(f"{width:>6} {kind:<13}{name:<16}{figures}{row['ratio']:>7.2f}  {row['same_tokens']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="384,1024,2048,5120", help="hidden sizes, comma-separated")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, 256000, (8, args.prompt_tokens), generator=generator)
    report = {
        "machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "models": [],
    }
    print(f"{report['machine']}, fp32, vocab 256000, {args.prompt_tokens} prompt tokens, {args.new_tokens} new")
    print(
        f"{'hidden':>6} {'weights':<13}{'case':<16}{'polylm':>14}{'transformers':>15}{'decided':>9}{'ratio':>7}  same"
    )
    for index, width in enumerate(int(size) for size in args.sizes.split(",")):
        config = ModelConfig(
            name=f"bench-{width}", hidden_size=width, num_layers=LAYERS.get(width, 2), num_heads=max(width // 64, 1)
        )
        for kind in ("initial", "trained-like"):
            ours = build_model(config, seed=0).eval()
            if kind == "trained-like":
                make_trained_like(ours)
            rows = bench_model(ours, prompts, args, beam=index == 0 and kind == "initial")
            show(width, kind, rows)
            report["models"].append(
                {"hidden": width, "layers": config.num_layers, "parameters": count_parameters(config), "weights": kind}
                | {"cases": rows}
            )
            del ours
            gc.collect()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
