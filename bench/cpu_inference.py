"""CPU inference side by side: polylm fp32 / int8 / int4, transformers fp32, llama.cpp F32 / Q8_0 / Q4_K_M.

    python bench/cpu_inference.py [--hidden 1024] [--layers 8] [--new-tokens 32] [--out result.json]

One PolyLM-shaped model (GPT-2 layout, the real 256,000-row tied embedding, Megatron init; hidden 1024 and 8
layers make 363M parameters), fp32, with a tokenizer trained on the embedded corpus. It is saved once; polylm
quantizes it (`polylm quantize --bits 8|4`) and exports it to GGUF (`polylm export --outtype f32|q8_0|q4_k_m`).
Each engine then runs in a fresh process: greedy decoding at batch 1 of --new-tokens tokens after a 32-token
prompt, 2 threads, best of --repeats after a warm-up, and the process's peak RSS (VmHWM, weights included).
The same 8 prompts give each engine's greedy agreement with polylm fp32 (all new tokens equal). Ratios: polylm
engine / its llama.cpp counterpart (goal >= 0.67 each) and polylm fp32 / transformers.
With --profile, polylm's engines also print where the time goes (torch.profiler, top operators).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import cpu_model

ENGINES = ("polylm-fp32", "polylm-int8", "polylm-int4", "transformers-fp32", "llama.cpp-F32", "llama.cpp-Q8_0",
           "llama.cpp-Q4_K_M")  # fmt: skip
PAIRS = (("polylm-fp32", "llama.cpp-F32"), ("polylm-int8", "llama.cpp-Q8_0"), ("polylm-int4", "llama.cpp-Q4_K_M"),
         ("polylm-fp32", "transformers-fp32"))  # fmt: skip


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def worker(engine: str, path: Path, prompts: list[list[int]], new_tokens: int, repeats: int, profile: bool) -> dict:
    """One engine in this (fresh) process: seconds for the first prompt's continuation (best of `repeats`, after a
    warm-up), the greedy tokens of every prompt, and the peak RSS (llama.cpp: of its own process)."""
    if engine.startswith("llama.cpp"):
        from polylm.gguf_check import run

        result = run(path, prompts, new_tokens=new_tokens, threads=torch.get_num_threads(), timed_runs=repeats)
        return {"seconds": min(result.seconds), "tokens": result.tokens, "peak_rss_mib": result.peak_rss_mib,
                "weight_repacking": result.extra_buffers}  # fmt: skip
    from polylm.generate import GenerationConfig, generate
    from polylm.hf_checkpoint import load_model

    config = GenerationConfig(max_new_tokens=new_tokens, eos_token_id=None)
    if engine == "transformers-fp32":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

        def run_prompts(batch):
            out = []
            for prompt in batch:
                ids = torch.tensor([prompt])
                with torch.inference_mode():
                    generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                               min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)  # fmt: skip
                out.append(generated[0, len(prompt) :].tolist())
            return out
    else:
        from polylm.inference import prepare_for_inference

        model = prepare_for_inference(load_model(path))

        def run_prompts(batch):
            return [generate(model, [prompt], config)[0][0].token_ids for prompt in batch]

    tokens = run_prompts(prompts)
    seconds = min(_seconds(lambda: run_prompts(prompts[:1])) for _ in range(repeats))
    report = {"seconds": seconds, "tokens": tokens, "peak_rss_mib": peak_rss_mib()}
    if profile and engine.startswith("polylm"):
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            run_prompts(prompts[:1])
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        report["profile"] = {e.key: round(e.self_cpu_time_total / total, 3) for e in events[:6]}
    return report


def prepare(root: Path, hidden: int, layers: int) -> tuple[dict[str, Path], list[list[int]]]:
    """The model in every form each engine reads, and the 8 prompts (32 tokens of held-out corpus lines)."""
    from polylm.config import ModelConfig
    from polylm.demo.corpus import CORPUS, held_out_lines, languages
    from polylm.gguf import export_gguf
    from polylm.hf_checkpoint import save_model
    from polylm.model import build_model
    from polylm.quantize.convert import quantize_model
    from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer

    tokenizer = train_tokenizer(
        sorted(CORPUS.glob("*.txt")), root / "tokenizer", TokenizerTrainingConfig(vocab_size=8000)
    )
    config = ModelConfig(name=f"bench-{hidden}x{layers}", hidden_size=hidden, num_layers=layers, num_heads=hidden // 64)
    model_dir = save_model(build_model(config, seed=0), root / "fp32", tokenizer=tokenizer)
    paths = {"polylm-fp32": model_dir, "transformers-fp32": model_dir}
    for bits in (8, 4):
        quantize_model(model_dir, root / f"int{bits}", bits)
        paths[f"polylm-int{bits}"] = root / f"int{bits}"
    for outtype in ("f32", "q8_0", "q4_k_m"):
        out = root / f"model.{outtype}.gguf"
        export_gguf(model_dir, out, outtype)
        paths[f"llama.cpp-{outtype.upper()}"] = out
    lines = [held_out_lines(lang)[0] for lang in languages()]
    prompts = []
    for line in lines:
        ids = tokenizer.encode(" ".join([line] * 4))[:32]
        if len(ids) == 32 and len(prompts) < 8:
            prompts.append(ids)
    return paths, prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    parser.add_argument("--worker", nargs=3, metavar=("ENGINE", "PATH", "REQUEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.worker:
        engine, path, request = args.worker
        request = json.loads(request)
        report = worker(engine, Path(path), request["prompts"], request["new_tokens"], request["repeats"],
                        request["profile"])  # fmt: skip
        print(json.dumps(report))
        return

    from polylm.model import count_parameters

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths, prompts = prepare(root, args.hidden, args.layers)
        from polylm.hf_checkpoint import read_config

        parameters = count_parameters(read_config(paths["polylm-fp32"]))
        sizes = {engine: sum(p.stat().st_size for p in ([path] if path.is_file() else path.glob("*.safetensors")))
                 for engine, path in paths.items()}  # fmt: skip
        request = json.dumps({"prompts": prompts, "new_tokens": args.new_tokens, "repeats": args.repeats,
                              "profile": args.profile})  # fmt: skip
        results = {}
        print(f"{cpu_model()}, 2 threads; {parameters:,} parameters (hidden {args.hidden}, {args.layers} layers, "
              f"vocab 256000); greedy, batch 1, 32-token prompt, {args.new_tokens} new tokens")  # fmt: skip
        print(f"{'engine':<20}{'tokens/s':>10}{'peak RSS':>12}{'file':>10}  same greedy as polylm fp32")
        for engine in ENGINES:
            command = [sys.executable, __file__, "--worker", engine, str(paths[engine]), request]
            env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
            output = subprocess.run(command, capture_output=True, text=True, env=env)
            if output.returncode != 0:
                print(f"{engine:<20} failed: {output.stderr.strip().splitlines()[-1:]}")
                continue
            report = json.loads(output.stdout.strip().splitlines()[-1])
            report["tokens_per_s"] = args.new_tokens / report["seconds"]
            report["file_mib"] = sizes[engine] / 2**20
            results[engine] = report
            same = sum(a == b for a, b in zip(report["tokens"], results["polylm-fp32"]["tokens"], strict=True))
            report["greedy_same"] = f"{same}/{len(prompts)}"
            print(f"{engine:<20}{report['tokens_per_s']:>10.1f}{report['peak_rss_mib']:>9.0f} MiB"
                  f"{report['file_mib']:>7.0f} MiB  {report['greedy_same']}", flush=True)  # fmt: skip
            if "profile" in report:
                print(f"{'':<20}time: {report['profile']}")
        ratios = {f"{a} / {b}": results[a]["tokens_per_s"] / results[b]["tokens_per_s"]
                  for a, b in PAIRS if a in results and b in results}  # fmt: skip
        for name, ratio in ratios.items():
            print(f"{name:<40}{ratio:>6.2f}")
        if args.out:
            for report in results.values():
                report.pop("tokens")
            summary = {"machine": f"{cpu_model()}, 2 threads", "torch": torch.__version__, "parameters": parameters,
                       "hidden": args.hidden, "layers": args.layers, "new_tokens": args.new_tokens,
                       "engines": results, "ratios": ratios}  # fmt: skip
            args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
