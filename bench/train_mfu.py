"""MFU of a polylm training step on one GPU: the `polylm-1.7b` shape (full width, 256K vocabulary), bf16, compiled.

    python bench/train_mfu.py [--layers 24] [--micro-batch 8] [--seq-len 2048] [--steps 20] [--peak-flops 989e12]
                              [--no-compile] [--activation-checkpointing] [--out result.json]

Same pieces as `polylm pretrain`: `build_model`, `parallelize` (checkpointing, per-block compile), the fused
output layer + loss, fused AdamW with the trainer's parameter groups, its clipping at 1.0 (`clip_gradients`), bf16
autocast over fp32 weights.
Random token ids stand in for data (the step's cost does not depend on them). Fewer layers than 24 when memory asks:
MFU is per layer-FLOP, so it changes little. MFU = tokens/s × flops_per_token / peak, with the trainer's formula
(docs/pretrain.md). Also runs on CPU with a small shape (`--device cpu --layers 2 --hidden 256 --vocab 8000`), to
check the script itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from polylm.config import preset
from polylm.model import build_model
from polylm.train.config import OptimSection, ParallelSection
from polylm.train.distributed import World, clip_gradients, parallelize
from polylm.train.trainer import flops_per_token, optimizer_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, help="default: the preset's 2048")
    parser.add_argument("--vocab", type=int, help="default: the preset's 256,000")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--peak-flops", type=float, default=989e12, help="dense bf16 peak of the GPU (H100 SXM)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    shape = {"num_layers": args.layers, "dtype": "float32"}
    if args.hidden:
        shape["hidden_size"] = args.hidden
    if args.vocab:
        shape["vocab_size"] = args.vocab
    config = preset("polylm-1.7b").replace(**shape)
    device = torch.device(args.device)
    model = build_model(config, seed=0, device=device)
    parallel = ParallelSection(activation_checkpointing=args.activation_checkpointing, compile=not args.no_compile)
    network = parallelize(model, "single", parallel, "bf16", World(device=device))
    optimizer = optimizer_for(model, OptimSection(lr=1e-4))
    tokens = torch.randint(0, config.vocab_size, (args.micro_batch, args.seq_len + 1), device=device)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for _ in range(args.steps):
        synchronize()
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss, _ = network(tokens[:, :-1], targets=tokens[:, 1:])
        loss.backward()
        clip_gradients(model, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        times.append(time.perf_counter() - started)
    step_time = statistics.median(times[3:] if len(times) > 5 else times)
    tokens_per_s = args.micro_batch * args.seq_len / step_time
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "layers": args.layers,
        "hidden": config.hidden_size,
        "vocab": config.vocab_size,
        "micro_batch": args.micro_batch,
        "seq_len": args.seq_len,
        "compile": not args.no_compile,
        "activation_checkpointing": args.activation_checkpointing,
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * flops_per_token(config, args.seq_len) / args.peak_flops,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
        "first_step_s": times[0],
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
