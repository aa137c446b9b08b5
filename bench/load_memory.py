"""Peak memory of loading a sharded fp32 checkpoint (~500 MB): polylm vs transformers, same files, same run.

    python bench/load_memory.py [--workdir DIR] [--shard-size 100MB]

Writes a GPT-2/PolyLM-shaped checkpoint of 125M parameters (vocab 50000, hidden 768, 12 layers, fp32) twice:
as transformers' sharded safetensors and as the released PolyLM layout (torch.save'd `pytorch_model-*.bin`
shards + index). Each load runs in a fresh process that reports its resident memory after imports and its
peak (VmHWM) after loading and reading every weight once (a lazily memory-mapped load pays on first use, so
stopping at the load would flatter it). The load cost is peak minus baseline, so the ~300 MB that
`import torch` takes is charged to neither loader. Prints that cost as a multiple of the checkpoint size,
per loader, and the ratio polylm / transformers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path

def rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])

loader, model_dir = sys.argv[1], sys.argv[2]
import torch
if loader == "polylm":
    from polylm import load_model
else:
    from transformers import AutoModelForCausalLM
torch.ones(256, 256).sum().item()  # first-op runtime setup belongs to the baseline, not to either loader
baseline = rss_kib("VmRSS:")
start = time.perf_counter()
if loader == "polylm":
    model = load_model(model_dir)
else:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
seconds = time.perf_counter() - start
# Touch every weight, as the first forward pass would: a loader that maps the file lazily pays here.
with torch.no_grad():
    checksum = sum(float(p.sum()) for p in model.parameters())
assert next(model.parameters()).dtype == torch.float32
print(json.dumps({"baseline_kib": baseline, "peak_kib": rss_kib("VmHWM:"), "seconds": seconds}))
"""


def write_checkpoints(workdir: Path, shard_size: str) -> tuple[Path, Path]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=50000, n_positions=2048, n_embd=768, n_layer=12, n_head=12, activation_function="gelu_fast"
    )
    model = GPT2LMHeadModel(config)
    safetensors_dir = workdir / "safetensors"
    model.save_pretrained(safetensors_dir, max_shard_size=shard_size)

    bin_dir = workdir / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "config.json").write_text((safetensors_dir / "config.json").read_text())
    index = json.loads((safetensors_dir / "model.safetensors.index.json").read_text())
    state = model.state_dict()
    shard_names = sorted(set(index["weight_map"].values()))
    weight_map = {}
    for number, shard_name in enumerate(shard_names, start=1):
        keys = [key for key, name in index["weight_map"].items() if name == shard_name]
        bin_name = f"pytorch_model-{number:05d}-of-{len(shard_names):05d}.bin"
        torch.save({key: state[key].clone() for key in keys}, bin_dir / bin_name)
        weight_map.update(dict.fromkeys(keys, bin_name))
    (bin_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return safetensors_dir, bin_dir


def measure(loader: str, model_dir: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, loader, str(model_dir)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where to write the checkpoints (default: a temp dir)")
    parser.add_argument("--shard-size", default="100MB", help="transformers max_shard_size for the checkpoint")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="polylm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    safetensors_dir, bin_dir = write_checkpoints(workdir, args.shard_size)
    print(f"checkpoints written in {time.perf_counter() - started:.1f}s under {workdir}")
    print(f"{'format':<13}{'size MB':>9}{'shards':>8}{'loader':>14}{'peak-base MB':>14}{'x size':>8}{'seconds':>9}")
    for label, model_dir, pattern in (
        ("safetensors", safetensors_dir, "*.safetensors"),
        ("bin (legacy)", bin_dir, "*.bin"),
    ):
        files = list(model_dir.glob(pattern))
        size = sum(f.stat().st_size for f in files)
        costs = {}
        for loader in ("polylm", "transformers"):
            if loader == "transformers" and label.startswith("bin"):
                continue  # transformers 5 no longer loads torch.save'd .bin shards without extra flags
            run = measure(loader, model_dir)
            costs[loader] = (run["peak_kib"] - run["baseline_kib"]) * 1024
            print(
                f"{label:<13}{size / 1e6:>9.0f}{len(files):>8}{loader:>14}{costs[loader] / 1e6:>14.0f}"
                f"{costs[loader] / size:>8.2f}{run['seconds']:>9.2f}"
            )
        if len(costs) == 2:
            print(f"{'':<13}ratio polylm / transformers peak cost: {costs['polylm'] / costs['transformers']:.2f}")


if __name__ == "__main__":
    main()
