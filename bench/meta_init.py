"""Start-up memory under FSDP: each rank's peak RSS while the model is built, sharded and initialized.

    python bench/meta_init.py [--hidden 5120] [--layers 2] [--vocab 256000] [--ranks 2] [--paths meta,full]
                              [--losses 5]

Runs `torchrun --nproc_per_node=RANKS` (gloo, CPU) on itself once per path, and reads each rank's peak RSS
(`ru_maxrss`) once its shards hold their values:
- `meta`: what `polylm pretrain` does under FSDP: the model on the meta device, `fully_shard`, then
  `materialize` (each rank allocates and fills only its shards);
- `full`: the plain path it replaced: `build_model` (the whole fp32 model on every rank), then `fully_shard`.
Prints each path's peak per rank against the full fp32 model's size, the ratio between the paths, and checks
that the two paths' shards are equal.

`--losses N` then trains the same shape with `polylm pretrain` (tiny data from the embedded corpus, 8 samples of 64
tokens a step): once under `torchrun` with `parallel.engine=fsdp`, once in one process, each process with cores /
ranks threads. It compares their first N per-step losses and gradient norms, and reads the FSDP run's own start-up
peak (`startup_peak_rss_gib`, its first metrics record).
Each run is stopped (SIGKILL) once N steps are logged, before its multi-GB checkpoint. At the default shape, one
process needs weights, gradients and AdamW state: about 31 GiB. The 2-rank FSDP run needs about 51 GiB in all, as
each rank also holds the whole embedding and its gradient while the root module computes. On a smaller machine,
add swap first (2026-12-07, 24 GiB + 40 GiB of swap: FSDP 7-15 min a step, one process 3-7.5 min).
Results: bench/results/meta_init_<date>_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import psutil

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


def _pretrain_config(args: argparse.Namespace, scratch: Path) -> Path:
    """A pretrain config of the benchmark's shape over tiny prepared data (the embedded corpus)."""
    corpus = Path(__file__).parents[1] / "src" / "polylm" / "resources" / "corpus"
    sources = "\n".join(f'  - {{name: {lang}, lang: {lang}, paths: ["{corpus / (lang + ".txt")}"]}}'
                        for lang in ("en", "zh", "de"))  # fmt: skip
    (scratch / "data.yaml").write_text(
        f"sources:\n{sources}\npipeline: {{minhash_threshold: null}}\ntokenizer: {{vocab_size: 1500}}\n"
        "curriculum: {total_tokens: 20480, seq_len: 64}\nvalidation_fraction: 0.1\n"
    )
    polylm = [sys.executable, "-m", "polylm.cli"]
    done = subprocess.run([*polylm, "data", "prepare", "--config", str(scratch / "data.yaml"), "--out",
                           str(scratch / "data")], capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"data prepare failed:\n{done.stderr[-3000:]}")
    shape = (f"{{hidden_size: {args.hidden}, num_layers: {args.layers}, num_heads: {args.heads}, "
             f"vocab_size: {args.vocab}, max_position_embeddings: 2048}}")  # fmt: skip
    config = scratch / "train.yaml"
    config.write_text(
        f"preset: tiny\ndata: {scratch / 'data'}\nmodel: {{overrides: {shape}}}\n"
        "batch: {global_tokens: 512, micro_batch: 4}\noptim: {lr: 0.0003, warmup_steps: 2}\n"
        f"run: {{max_steps: {args.losses + 1}, eval_tokens: 256, checkpoint_every: 1000, tensorboard: false}}\n"
    )
    return config


def _losses_until(command: list[str], out: Path, steps: int, threads: int) -> list[dict]:
    """Run `command` until `out/metrics.jsonl` holds `steps` records, then kill its process group."""
    log = out.with_suffix(".log")
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})  # fmt: skip
    metrics = out / "metrics.jsonl"
    while True:
        ended = process.poll() is not None
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if len(lines) >= steps and lines[steps - 1].endswith("}"):
            if not ended:  # torchrun starts each rank in a session of its own: kill the whole tree
                for child in [*psutil.Process(process.pid).children(recursive=True), psutil.Process(process.pid)]:
                    child.send_signal(signal.SIGKILL)
                process.wait()
            return [json.loads(line) for line in lines[:steps]]
        if ended:
            raise SystemExit(f"{' '.join(command[2:5])} ended (exit {process.returncode}) before {steps} steps:\n"
                             f"{log.read_text()[-3000:]}")  # fmt: skip
        time.sleep(2)


def _compare_losses(args: argparse.Namespace, scratch: Path) -> dict:
    """The FSDP run's first `args.losses` losses against one process's, and the FSDP run's start-up peak."""
    config = _pretrain_config(args, scratch)
    polylm = ["-m", "polylm.cli", "pretrain", "--config", str(config), "--out"]
    started = time.perf_counter()
    # The same threads per process in both runs, so that each matmul takes the same kernel path and the micro
    # batches' gradients are the same sums on both sides.
    threads = max(1, (os.cpu_count() or 1) // args.ranks)
    fsdp = _losses_until([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc_per_node={args.ranks}", *polylm, str(scratch / "fsdp"), "parallel.engine=fsdp"],
                         scratch / "fsdp", args.losses, threads)  # fmt: skip
    fsdp_seconds = time.perf_counter() - started
    started = time.perf_counter()
    single = _losses_until([sys.executable, *polylm, str(scratch / "single")], scratch / "single", args.losses,
                           threads)  # fmt: skip
    gaps = [abs(a["loss"] - b["loss"]) for a, b in zip(fsdp, single, strict=True)]
    return {"fsdp_losses": [r["loss"] for r in fsdp], "single_losses": [r["loss"] for r in single],
            "fsdp_grad_norms": [r["grad_norm"] for r in fsdp], "single_grad_norms": [r["grad_norm"] for r in single],
            "largest_gap": max(gaps), "fsdp_startup_peak_rss_gib": fsdp[0]["startup_peak_rss_gib"],
            "single_startup_peak_rss_gib": single[0]["startup_peak_rss_gib"],
            "fsdp_seconds": round(fsdp_seconds), "single_seconds": round(time.perf_counter() - started)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=5120)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=40)
    parser.add_argument("--vocab", type=int, default=256000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--paths", default="meta,full", help="which start-ups to measure (meta, full; '' for none)")
    parser.add_argument("--losses", type=int, default=0, help="then compare N first losses: FSDP against 1 process")
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
        for path in filter(None, args.paths.split(",")):
            results[path] = _run(args, path, Path(scratch))
        losses = _compare_losses(args, Path(scratch)) if args.losses else None
    from polylm.config import ModelConfig
    from polylm.model import count_parameters

    shape = ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                        max_position_embeddings=2048)  # fmt: skip
    model_bytes = count_parameters(shape) * 4
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
    if losses is not None:
        startup = losses["fsdp_startup_peak_rss_gib"] * GIB
        summary["losses"] = losses
        print(f"  pretrain under FSDP: start-up peak RSS {startup / GIB:.2f} GiB = {startup / model_bytes:.2f}x the "
              f"fp32 model (one process: {losses['single_startup_peak_rss_gib']:.2f} GiB)")  # fmt: skip
        print(f"  first {args.losses} losses, FSDP {args.ranks} ranks vs 1 process: largest gap "
              f"{losses['largest_gap']:.1e} ({'<=' if losses['largest_gap'] <= 1e-5 else 'ABOVE'} 1e-5)")  # fmt: skip
        pairs = zip(losses["fsdp_losses"], losses["single_losses"], losses["fsdp_grad_norms"],
                    losses["single_grad_norms"], strict=True)  # fmt: skip
        for step, (a, b, norm_a, norm_b) in enumerate(pairs, 1):
            print(f"    step {step}: loss {a:.6f} {b:.6f}, gradient norm {norm_a:.9g} {norm_b:.9g}")
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
