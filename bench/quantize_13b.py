"""PolyLM-13B on this machine: quantize a 13B-shaped checkpoint to int8 and int4, then generate from each.

    python bench/quantize_13b.py [--work DIR] [--keep] [--out result.json]

Writes a PolyLM-13B-shaped checkpoint (hidden 5120, 40 layers, 40 heads, 256,000-row tied embedding:
13,906,790,400 parameters) with random bf16 weights in the released layout: four `pytorch_model-0000k-of-00004.bin`
shards with an index, Conv1D weights as (in, out), the converter's `attn.bias` / `attn.masked_bias` buffers and
the tied `lm_head.weight`, a GPT2LMHeadModel `config.json`, and a tokenizer (trained on the embedded corpus, so
the 256,000-row embedding is padded beyond its pieces). Then, each as a separate command whose peak RSS
(`ru_maxrss` of the child) is recorded:
  polylm quantize 13b --out int8 --bits 8      and      --bits 4
  polylm generate --model int8|int4 --prompt ... --max-new-tokens 32 --no-eos --json
plus the decoding speed (tokens/s of those 32 tokens, measured inside a separate process) and the disk used.
Goal: both fit a 24 GiB machine, peak RSS < 22 GiB for int8 and < 12 GiB for int4. Needs about 55 GB of disk.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import cpu_model

from polylm.config import preset
from polylm.demo.corpus import CORPUS
from polylm.hf_checkpoint import config_to_hf
from polylm.model import PolyLM
from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer

SHARDS = 4


def write_checkpoint(out: Path) -> None:
    """Random N(0, 0.006) bf16 weights in the release's .bin layout, one shard in memory at a time."""
    config = preset("polylm-13b")
    out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(sorted(CORPUS.glob("*.txt")), out, TokenizerTrainingConfig(vocab_size=8000))
    with torch.device("meta"):
        names = [(name, tuple(p.shape)) for name, p in PolyLM(config).named_parameters()]
    total = sum(math.prod(shape) for _, shape in names)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    for name, shape in names:  # about equal bytes per shard, as save_pretrained's max_shard_size makes them
        if sum(math.prod(s) for _, s in shards[-1]) >= total / SHARDS and len(shards) < SHARDS:
            shards.append([])
        shards[-1].append((name, shape))
    generator = torch.Generator().manual_seed(0)
    weight_map = {}
    for shard, members in enumerate(shards):
        file = f"pytorch_model-{shard + 1:05d}-of-{len(shards):05d}.bin"
        state = {}
        for name, shape in members:
            conv1d = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
            stored = shape[::-1] if conv1d else shape
            tensor = torch.empty(stored, dtype=torch.bfloat16)
            if name.endswith("weight") and len(shape) == 2:
                for rows in torch.arange(stored[0]).split(8192):
                    tensor[rows] = torch.randn(len(rows), *stored[1:], generator=generator).mul_(0.006).bfloat16()
            elif "ln" in name and name.endswith("weight"):
                tensor.fill_(1.0)
            else:
                tensor.zero_()
            state[f"transformer.{name}"] = tensor
            if name == "wte.weight":
                state["lm_head.weight"] = tensor  # the converter's tied copy; torch.save stores the storage once
            if name.endswith("attn.c_attn.weight"):  # the converter's buffers, as the release has them
                prefix = f"transformer.{name.removesuffix('.c_attn.weight')}"
                context = config.max_position_embeddings
                state[f"{prefix}.bias"] = torch.ones(context, context, dtype=torch.bool).tril()[None, None]
                state[f"{prefix}.masked_bias"] = torch.tensor(-1e4)
        torch.save(state, out / file)
        weight_map.update(dict.fromkeys(state, file))
        del state
    index = {"metadata": {}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))
    hf = {**config_to_hf(config.replace(vocab_size=256000)), "architectures": ["GPT2LMHeadModel"]}
    (out / "config.json").write_text(json.dumps(hf, indent=2))


def measured(command: list[str]) -> tuple[float, float, str]:
    """(peak RSS in GiB, seconds, stdout) of `command` run in its own wrapper process."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "seconds = time.perf_counter() - start\n"
        "sys.stderr.write(done.stderr[-2000:])\n"
        "print(done.stdout)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, seconds, done.returncode)\n"
    )
    result = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True)
    *output, last = result.stdout.strip().splitlines()
    rss_kib, seconds, code = last.split()
    if int(code) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return int(rss_kib) / 2**20, float(seconds), "\n".join(output)


SPEED = """
import json, sys, time, torch
from polylm.hf_checkpoint import load_model
from polylm.generate import GenerationConfig, generate
torch.set_num_threads(2)
model = load_model(sys.argv[1])
prompt = list(range(100, 132))
config = GenerationConfig(max_new_tokens=32, eos_token_id=None)
generate(model, [prompt], GenerationConfig(max_new_tokens=2, eos_token_id=None))
start = time.perf_counter()
tokens = generate(model, [prompt], config)[0][0].token_ids
print(json.dumps({"tokens_per_s": len(tokens) / (time.perf_counter() - start)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="where to write the checkpoints (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoints")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="polylm-13b-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "polylm-13b-random"
    report = {"machine": f"{cpu_model()}, 2 threads", "torch": torch.__version__, "results": {}}
    try:
        start = time.perf_counter()
        write_checkpoint(source)
        source_gib = sum(p.stat().st_size for p in source.glob("*.bin")) / 2**30
        print(f"wrote {source} ({source_gib:.1f} GiB of bf16 .bin shards) in {time.perf_counter() - start:.0f} s")
        polylm = [sys.executable, "-m", "polylm.cli"]
        for bits in (8, 4):
            out = work / f"int{bits}"
            rss, seconds, _ = measured([*polylm, "quantize", str(source), "--out", str(out), "--bits", str(bits)])
            disk = sum(p.stat().st_size for p in out.iterdir()) / 2**30
            prompt = "Beijing is the capital of China.\nTranslate this sentence from English to Chinese."
            generate = [*polylm, "generate", "--model", str(out), "--prompt", prompt, "--max-new-tokens", "32"]
            generate_rss, generate_seconds, output = measured([*generate, "--no-eos", "--json"])
            tokens = len(json.loads(output.splitlines()[-1])["token_ids"])
            speed = json.loads(subprocess.run([sys.executable, "-c", SPEED, str(out)], capture_output=True,
                                              text=True, check=True).stdout.strip().splitlines()[-1])  # fmt: skip
            row = {"quantize_peak_rss_gib": rss, "quantize_seconds": seconds, "disk_gib": disk,
                   "generate_peak_rss_gib": generate_rss, "generate_seconds": generate_seconds,
                   "generated_tokens": tokens, **speed}  # fmt: skip
            report["results"][f"int{bits}"] = row
            print(f"int{bits}: quantize peak RSS {rss:.1f} GiB in {seconds:.0f} s, {disk:.1f} GiB on disk; generate "
                  f"peak RSS {generate_rss:.1f} GiB, {tokens} tokens in {generate_seconds:.0f} s (load included), "
                  f"{speed['tokens_per_s']:.2f} tokens/s decoding", flush=True)  # fmt: skip
            if not args.keep:
                shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(source, ignore_errors=True)
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
