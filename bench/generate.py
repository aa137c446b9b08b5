"""Decoding speed: polylm vs transformers on the same weights, same run.

    python bench/generate.py [--new-tokens 64] [--repeats 3] [--out result.json]

A PolyLM-shaped model (GPT-2 layout, 256,000-token vocabulary, hidden 384, 6 layers: ~110M parameters), fp32
on CPU, random Megatron-init weights, saved once in the HF layout and loaded by both. Measures greedy
tokens/s at batch 1 and batch 8 and the latency of a 4-beam search, checks both produce the same tokens,
and prints the ratios (polylm / transformers for throughput, transformers / polylm for latency, so > 1
means polylm is faster everywhere). Each figure is the best of --repeats runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
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


def best_time(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")

    config = ModelConfig(name="bench-110m", hidden_size=384, num_layers=6, num_heads=6)
    ours = build_model(config, seed=0).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_model(ours, tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32).eval()
    ours.optimize_for_inference()  # what TextGenerator (CLI, pipeline, server) does to every model it serves
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, config.vocab_size, (8, args.prompt_tokens), generator=generator)

    def ours_run(batch: int, **options):
        gen_config = GenerationConfig(max_new_tokens=args.new_tokens, eos_token_id=None, **options)
        return [g.token_ids for row in generate(ours, prompts[:batch].tolist(), gen_config) for g in row]

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
        return out[:, args.prompt_tokens :].tolist()

    cases = [
        ("greedy batch 1", 1, {}),
        ("greedy batch 8", 8, {}),
        ("beam-4 batch 1", 1, {"num_beams": 4}),
    ]
    report = {
        "machine": f"{cpu_model()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "parameters": count_parameters(config),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "cases": {},
    }
    print(f"model: {report['parameters']:,} parameters, vocab {config.vocab_size}, fp32, {report['machine']}")
    print(f"{'case':<16}{'polylm':>14}{'transformers':>16}{'ratio':>8}  same tokens")
    for name, batch, options in cases:
        same = ours_run(batch, **options) == hf_run(batch, **options)
        ours_seconds = best_time(lambda b=batch, o=options: ours_run(b, **o), args.repeats)
        hf_seconds = best_time(lambda b=batch, o=options: hf_run(b, **o), args.repeats)
        tokens = batch * args.new_tokens
        if name.startswith("beam"):
            row = {"polylm_seconds": ours_seconds, "transformers_seconds": hf_seconds}
            shown = (f"{ours_seconds:>12.2f} s", f"{hf_seconds:>14.2f} s")
        else:
            row = {"polylm_tokens_per_s": tokens / ours_seconds, "transformers_tokens_per_s": tokens / hf_seconds}
            shown = (f"{tokens / ours_seconds:>10.1f} tok/s", f"{tokens / hf_seconds:>12.1f} tok/s")
        row["ratio"] = hf_seconds / ours_seconds
        row["same_tokens"] = same
        report["cases"][name] = row
        print(f"{name:<16}{shown[0]}{shown[1]}{row['ratio']:>8.2f}  {same}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
