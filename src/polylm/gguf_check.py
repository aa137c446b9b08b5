"""Run an exported GGUF in llama.cpp and compare it with polylm: `polylm export --check`, the tests, the benches.

llama.cpp runs through llama-cpp-python in a child process (llama.cpp and PyTorch in one process can crash on
their two OpenMP runtimes), which reads a request as JSON on stdin and writes its answers into a .npz file.

On Intel CPUs with AMX, llama.cpp repacks Q8_0 and K-quant weights for its AMX kernels; the reported crash of
quantized GPT-2 exports there happens exactly when a micro-batch holds more than one token, which is when those
kernels take their AMX tile path (one token takes their VNNI path). `extra_buffers=False` turns the repacking off,
as `--no-repack` does for llama-cli and llama-server; `run` retries that way when the first try dies by a signal,
and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polylm.errors import PolyLMError

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
import llama_cpp

request = json.loads(sys.stdin.read())
if not request["extra_buffers"]:
    default_params = llama_cpp.llama_model_default_params
    def without_extra_buffers():
        params = default_params()
        params.use_extra_bufts = False
        return params
    llama_cpp.llama_model_default_params = without_extra_buffers
llm = llama_cpp.Llama(model_path=request["model"], n_ctx=request["n_ctx"], n_batch=request["n_batch"],
                      n_threads=request["threads"], n_threads_batch=request["threads"], logits_all=False, verbose=False)
vocab = llm.n_vocab()
out = {}
def last_logits():
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).copy()
def greedy(prompt):
    llm.reset()
    llm.eval(prompt)
    logits, tokens = last_logits(), []
    for _ in range(request["new_tokens"]):
        tokens.append(int((logits if not tokens else last_logits()).argmax()))
        if len(tokens) < request["new_tokens"]:
            llm.eval([tokens[-1]])
    return logits, tokens
for index, prompt in enumerate(request["prompts"]):
    out[f"logits_{index}"], tokens = greedy(prompt)
    out[f"tokens_{index}"] = np.array(tokens, dtype=np.int64)
seconds = []
for _ in range(request["timed_runs"] if request["prompts"] else 0):
    start = time.perf_counter()
    greedy(request["prompts"][0])
    seconds.append(time.perf_counter() - start)
out["seconds"] = np.array(seconds)
for index, text in enumerate(request["texts"]):
    out[f"text_{index}"] = np.array(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False), dtype=np.int64)
out["metadata"] = np.array(json.dumps(llm.metadata))
status = Path("/proc/self/status").read_text().splitlines()
out["peak_rss_kib"] = np.array([int(line.split()[1]) for line in status if line.startswith("VmHWM")] or [0])
np.savez(request["out"], **out)
llm.close()
"""


@dataclass
class LlamaResult:
    logits: list[np.ndarray]
    """Last-position logits of each prompt."""
    tokens: list[list[int]]
    """Greedy continuation of each prompt (argmax at every step, no eos stop)."""
    tokenized: list[list[int]]
    """llama.cpp's tokenization of each text (no BOS added, special tokens as text)."""
    metadata: dict[str, str]
    extra_buffers: bool
    """Whether llama.cpp ran with its weight repacking (AMX/repacked kernels) on."""
    seconds: list[float]
    """Wall time of each timed greedy run of the first prompt, inside the llama.cpp process."""
    peak_rss_mib: float
    """The llama.cpp process's peak resident memory."""


def _child(request: dict) -> subprocess.CompletedProcess:
    threads = str(request["threads"])
    return subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": threads},
    )


def run(
    gguf: Path,
    prompts: list[list[int]] = (),
    texts: list[str] = (),
    new_tokens: int = 0,
    threads: int = 2,
    n_batch: int = 512,
    timed_runs: int = 0,
) -> LlamaResult:
    """llama.cpp's logits, greedy tokens and tokenizations for `gguf` (see the module docstring on retries)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "answers.npz"
        longest = max((len(p) for p in prompts), default=0) + new_tokens + 8
        request = {
            "model": str(gguf),
            "prompts": [list(map(int, p)) for p in prompts],
            "texts": list(texts),
            "new_tokens": new_tokens,
            "threads": threads,
            "n_ctx": max(longest, 64),
            "n_batch": n_batch,
            "out": str(out),
            "extra_buffers": True,
            "timed_runs": timed_runs,
        }
        result = _child(request)
        if result.returncode < 0:  # killed by a signal: try once more without weight repacking
            request["extra_buffers"] = False
            result = _child(request)
        if result.returncode != 0:
            log = " | ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise PolyLMError(f"llama.cpp could not run {gguf} (exit {result.returncode}): {log}")
        answers = np.load(out)
        return LlamaResult(
            logits=[answers[f"logits_{i}"] for i in range(len(prompts))],
            tokens=[answers[f"tokens_{i}"].tolist() for i in range(len(prompts))],
            tokenized=[answers[f"text_{i}"].tolist() for i in range(len(texts))],
            metadata=json.loads(str(answers["metadata"])),
            extra_buffers=request["extra_buffers"],
            seconds=answers["seconds"].tolist(),
            peak_rss_mib=float(answers["peak_rss_kib"][0]) / 1024,
        )


def compare(model_dir: Path, gguf: Path, prompts: int, new_tokens: int) -> dict:
    """llama.cpp against polylm on held-out sentences of the embedded corpus (one per language): logits, greedy."""
    import torch

    from polylm.demo.corpus import held_out_lines, languages
    from polylm.generate import GenerationConfig, generate
    from polylm.hf_checkpoint import load_model
    from polylm.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(model_dir)
    ids = [tokenizer.encode(held_out_lines(lang)[0])[:48] for lang in languages()[:prompts]]
    llama = run(gguf, ids, new_tokens=new_tokens, threads=torch.get_num_threads())
    model = load_model(model_dir, dtype="float32")
    with torch.inference_mode():
        ours = [model(torch.tensor([row]))[0, -1].double().numpy() for row in ids]
    gaps = [
        float(abs(theirs - mine).max() / (mine.max() - mine.min()))
        for theirs, mine in zip(llama.logits, ours, strict=True)
    ]
    config = GenerationConfig(max_new_tokens=new_tokens, eos_token_id=None)
    greedy = [row[0].token_ids for row in generate(model, ids, config)]
    same = sum(mine == theirs for mine, theirs in zip(greedy, llama.tokens, strict=True))
    return {
        "prompts": len(ids),
        "max_logit_difference_relative_to_range": max(gaps),
        "greedy_equal": f"{same}/{len(ids)}",
        "llama_cpp_weight_repacking": llama.extra_buffers,
    }
