"""GPU check: PolyLM-1.7B with random bf16 weights, logits against transformers, forward tokens/s of both.

    PYTHONPATH=src python bench/gpu_check.py [--preset polylm-1.7b] [--device cuda] [--out result.json]

1. Builds the preset with random (Megatron-init) weights on the device, saves it in the HF layout and loads it
   back with polylm (bit-exact check) and with transformers' AutoModelForCausalLM.
2. Logits on random prompts: fp32 (TF32 off) ours vs transformers must agree to 1e-3; in bf16, where kernels
   legitimately differ, our error against the fp32 reference must be no worse than 1.5x transformers' own.
3. Forward throughput (tokens/s) at batch x seq, ours and transformers in the same process, and the ratio.
Runs on CPU with `--preset tiny --device cpu` as a dry run of the script itself.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from polylm import build_model, count_parameters, load_model, preset, save_model


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def tokens_per_second(forward, ids: torch.Tensor, device: str, iterations: int) -> float:
    for _ in range(2):
        forward(ids)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        forward(ids)
    synchronize(device)
    return ids.numel() * iterations / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="polylm-1.7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    config = preset(args.preset).replace(dtype="bfloat16")
    seq = min(args.seq, config.max_position_embeddings)
    report: dict = {"preset": args.preset, "parameters": count_parameters(config), "torch": torch.__version__}
    if args.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name()

    start = time.perf_counter()
    model = build_model(config, seed=0, device=args.device)
    report["build_seconds"] = round(time.perf_counter() - start, 2)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        save_model(model, tmp)
        report["save_seconds"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        ours = load_model(tmp, device=args.device)
        report["load_seconds"] = round(time.perf_counter() - start, 2)
        report["reload_bit_exact"] = all(
            torch.equal(a, b) for a, b in zip(model.parameters(), ours.parameters(), strict=True)
        )
        del model
        hf = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.bfloat16).to(args.device).eval()

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, config.vocab_size, (2, min(512, seq)), generator=generator).to(args.device)
    with torch.inference_mode():
        ours_bf16, hf_bf16 = ours(ids).float(), hf(ids).logits.float()
        ours.float()
        hf.float()
        ours_fp32, hf_fp32 = ours(ids), hf(ids).logits
        ours.to(torch.bfloat16)
        hf.to(torch.bfloat16)
    report["logits_std"] = ours_fp32.std().item()
    report["fp32_max_abs_diff_vs_transformers"] = (ours_fp32 - hf_fp32).abs().max().item()
    report["bf16_max_abs_diff_vs_transformers"] = (ours_bf16 - hf_bf16).abs().max().item()
    report["bf16_mean_abs_error_vs_fp32"] = {
        "polylm": (ours_bf16 - ours_fp32).abs().mean().item(),
        "transformers": (hf_bf16 - hf_fp32).abs().mean().item(),
    }
    report["bf16_argmax_agreement"] = (ours_bf16.argmax(-1) == hf_bf16.argmax(-1)).float().mean().item()
    del ours_bf16, hf_bf16, ours_fp32, hf_fp32

    bench_ids = torch.randint(3, config.vocab_size, (args.batch, seq), generator=generator).to(args.device)
    ours_tps = tokens_per_second(ours, bench_ids, args.device, args.iterations)
    hf_tps = tokens_per_second(lambda x: hf(x, use_cache=False).logits, bench_ids, args.device, args.iterations)
    report["forward_tokens_per_second"] = {"polylm": round(ours_tps), "transformers": round(hf_tps)}
    report["forward_speed_ratio_polylm_over_transformers"] = round(ours_tps / hf_tps, 3)
    report["forward_shape"] = [args.batch, seq]

    errors = report["bf16_mean_abs_error_vs_fp32"]
    report["pass"] = bool(
        report["reload_bit_exact"]
        and report["fp32_max_abs_diff_vs_transformers"] <= 1e-3
        and errors["polylm"] <= 1.5 * errors["transformers"]
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    raise SystemExit(0 if report["pass"] else 1)


if __name__ == "__main__":
    main()
