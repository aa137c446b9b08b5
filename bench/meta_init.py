"""Start-up memory under FSDP: each rank's peak RSS while the model is built, sharded and initialized.

    python bench/meta_init.py [--hidden 5120] [--layers 2] [--vocab 256000] [--ranks 2] [--paths meta,full]

Runs `torchrun --nproc_per_node=RANKS` (gloo, CPU) on itself once per path, and reads each rank's peak RSS
(`ru_maxrss`) once its shards hold their values:
- `meta`: what `polylm pretrain` does under FSDP: the model on the meta device, `fully_shard`, then
  `materialize` (each rank allocates and fills only its shards);
- `full`: the plain path it replaced: `build_model` (the whole fp32 model on every rank), then `fully_shard`.
Prints each path's peak per rank against the full fp32 model's size, the ratio between the paths, and checks
that the two paths' shards are equal. Results: bench/results/meta_init_<date>_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

GIB = 1 << 30


def _worker(args: argparse.Namespace) -> None:
    import torch

    from polylm.config import ModelConfig
    from polylm.model import PolyLM, build_model, count_parameters
    from polylm.train.config import ParallelSection
    from polylm.train.distributed import join_world, materialize, parallelize

    world = join_world("cpu")
    config = ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                         max_position_embeddings=2048, dtype="float32")  # fmt: skip
    if args.path == "meta":
        with torch.device("meta"):
            model = PolyLM(config)
        parallelize(model, "fsdp", ParallelSection(), "fp32", world)
        materialize(model, seed=1234, device=world.device)
    else:
        model = build_model(config, seed=1234)
        parallelize(model, "fsdp", ParallelSection(), "fp32", world)
    world.barrier()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # A fingerprint of this rank's shards: the two paths must give the same values.
    digest = sum(float(p.to_local().double().sum()) * (i + 1) for i, p in enumerate(model.parameters()))
    record = {"rank": world.rank, "peak_rss": peak, "parameters": count_parameters(config), "shard_digest": digest}
    Path(args.report).with_suffix(f".{world.rank}.json").write_text(json.dumps(record))


def _run(args: argparse.Namespace, path: str, scratch: Path) -> list[dict]:
    report = scratch / f"{path}.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
               __file__, "--worker", "--path", path, "--report", str(report), "--hidden", str(args.hidden),
               "--layers", str(args.layers), "--vocab", str(args.vocab), "--heads", str(args.heads)]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{path}: torchrun failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return [json.loads(report.with_suffix(f".{rank}.json").read_text()) for rank in range(args.ranks)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=5120)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=40)
    parser.add_argument("--vocab", type=int, default=256000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--paths", default="meta,full", help="which start-ups to measure (meta, full)")
    parser.add_argument("--out", type=Path, help="results JSON (default: bench/results/meta_init_<date>_cpu.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import cpu_model

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for path in args.paths.split(","):
            results[path] = _run(args, path, Path(scratch))
    model_bytes = results[next(iter(results))][0]["parameters"] * 4
    print(f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}: "
          f"{model_bytes / GIB:.2f} GiB in fp32; {args.ranks} ranks (gloo, CPU)")  # fmt: skip
    summary = {}
    for path, ranks in results.items():
        peak = max(r["peak_rss"] for r in ranks)
        summary[path] = {"peak_rss_gib": round(peak / GIB, 3), "of_model": round(peak / model_bytes, 3)}
        print(f"  {path:<5} peak RSS per rank {peak / GIB:6.2f} GiB = {peak / model_bytes:.2f}x the fp32 model")
    if {"meta", "full"} <= results.keys():
        ratio = summary["meta"]["peak_rss_gib"] / summary["full"]["peak_rss_gib"]
        same = [a["shard_digest"] for a in results["meta"]] == [b["shard_digest"] for b in results["full"]]
        summary["meta_over_full"] = round(ratio, 3)
        summary["same_shards"] = same
        print(f"  meta / full: {ratio:.2f}; shards {'equal' if same else 'DIFFER'}")
    out = args.out or Path(__file__).parent / "results" / f"meta_init_{date.today().isoformat()}_cpu.json"
    out.write_text(json.dumps({
        "benchmark": "meta_init", "date": date.today().isoformat(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "shape": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab, "ranks": args.ranks},
        "model_fp32_gib": round(model_bytes / GIB, 3), "summary": summary, "ranks": results,
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
