"""Serving throughput: the same requests from 16 concurrent clients vs one at a time, over HTTP.

    python bench/serve.py [--clients 16] [--requests 64] [--max-tokens 64] [--out result.json]

Starts `polylm serve` (a subprocess, loopback, free port) on a small PolyLM-shaped model (GPT-2 layout, random
Megatron-init weights, a SentencePiece tokenizer trained on the embedded corpus; by default vocabulary 8000,
hidden 256, 4 layers, context 512). Sends --requests greedy completions (`ignore_eos`, so each returns exactly
--max-tokens tokens; prompts are real sentences of the embedded corpus, 20-60 tokens), first one at a time, then
from --clients threads, and reports completion tokens/s, requests/s and p50/p99 request latency for both,
their ratio (goal: >= 3x), and whether both runs returned the same texts. One warm-up round precedes each.
--results-dir writes the JSON there with today's date; --out to a given path.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from _machine import cpu_model

from polylm import build_model, count_parameters, save_model
from polylm.config import ModelConfig
from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer

CORPUS = Path(__file__).resolve().parents[1] / "src" / "polylm" / "resources" / "corpus"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(port: int, body: dict) -> tuple[float, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body go out at once
    start = time.perf_counter()
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = json.loads(response.read())
    elapsed = time.perf_counter() - start
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload}")
    return elapsed, payload


def run(port: int, requests: list[dict], clients: int) -> dict:
    """Send every request once from `clients` threads; latencies and outputs in request order."""
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(requests)):
        todo.put(index)
    latencies = [0.0] * len(requests)
    texts = [""] * len(requests)
    tokens = [0] * len(requests)
    errors: list[str] = []

    def worker() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                latencies[index], payload = post(port, requests[index])
                texts[index] = payload["choices"][0]["text"]
                tokens[index] = payload["usage"]["completion_tokens"]
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "requests": len(requests),
        "wall_seconds": wall,
        "completion_tokens": sum(tokens),
        "tokens_per_second": sum(tokens) / wall,
        "requests_per_second": len(requests) / wall,
        "latency_p50_seconds": statistics.median(ordered),
        "latency_p99_seconds": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "latency_max_seconds": ordered[-1],
        "_texts": texts,
    }


def metric(port: int, name: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--threads", type=int, help="torch threads of the server (polylm serve --threads)")
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--results-dir", type=Path, help="write the results as JSON to DIR/serve_<date>_cpu.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        print("training a tokenizer and writing the model ...", file=sys.stderr)
        tokenizer = train_tokenizer(
            sorted(CORPUS.glob("*.txt")), Path(tmp) / "tokenizer", TokenizerTrainingConfig(vocab_size=args.vocab)
        )
        config = ModelConfig(
            name="bench-serve",
            vocab_size=tokenizer.vocab_size,
            max_position_embeddings=args.context,
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
        )
        save_model(build_model(config, seed=0), model_dir, tokenizer=tokenizer)

        lines = [line.strip() for path in sorted(CORPUS.glob("*.txt")) for line in path.read_text("utf-8").splitlines()]
        prompts = [line for line in lines if 20 <= len(tokenizer.encode(line)) <= 60]
        step = max(1, len(prompts) // args.requests)
        requests = [
            {
                "prompt": prompts[(i * step) % len(prompts)],
                "max_tokens": args.max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            for i in range(args.requests)
        ]
        prompt_tokens = [len(tokenizer.encode(r["prompt"])) for r in requests]

        port = free_port()
        command = [sys.executable, "-m", "polylm.cli", "serve", "--model", str(model_dir), "--port", str(port)]
        command += ["--max-batch", str(args.max_batch), "--log-level", "warning"]
        command += ["--threads", str(args.threads)] if args.threads else []
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    connection.request("GET", "/health")
                    if connection.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(
                        f"server did not start: {server.stderr.read().decode() if server.poll() is not None else ''}"
                    )
                time.sleep(0.2)

            print(f"{args.requests} requests x {args.max_tokens} tokens; warming up ...", file=sys.stderr)
            run(port, requests[: args.clients], args.clients)
            run(port, requests[:2], 1)
            load_before = os.getloadavg()
            sequential = run(port, requests, 1)
            print(f"one at a time: {sequential['tokens_per_second']:.0f} tokens/s", file=sys.stderr)
            steps, rows = metric(port, "polylm_engine_steps_total"), metric(port, "polylm_engine_step_rows_total")
            concurrent = run(port, requests, args.clients)
            mean_batch = (metric(port, "polylm_engine_step_rows_total") - rows) / max(
                1.0, metric(port, "polylm_engine_steps_total") - steps
            )
        finally:
            server.terminate()
            server.wait(30)

    same = sequential.pop("_texts") == concurrent.pop("_texts")
    load_after = os.getloadavg()
    result = {
        "machine": f"{cpu_model()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores",
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "torch": torch.__version__,
        "model": {
            **{k: getattr(config, k) for k in ("vocab_size", "hidden_size", "num_layers", "num_heads")},
            "max_position_embeddings": config.max_position_embeddings,
            "parameters": count_parameters(config),
        },
        "server_threads": args.threads or torch.get_num_threads(),
        "max_batch": args.max_batch,
        "max_tokens": args.max_tokens,
        "prompt_tokens_mean": statistics.mean(prompt_tokens),
        "sequential": sequential,
        "concurrent": concurrent,
        "concurrent_mean_batch_rows": mean_batch,
        "throughput_ratio": concurrent["tokens_per_second"] / sequential["tokens_per_second"],
        "same_texts": same,
    }
    print(f"\nmodel: {result['model']['parameters']:,} parameters, {args.requests} requests x {args.max_tokens} tokens")
    print(
        f"1-minute load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} (on {os.cpu_count()} cores)"
    )
    print(f"{'':<22}{'tokens/s':>10}{'req/s':>8}{'p50 s':>8}{'p99 s':>8}")
    for name, row in (("one at a time", sequential), (f"{args.clients} concurrent", concurrent)):
        print(
            f"{name:<22}{row['tokens_per_second']:>10.0f}{row['requests_per_second']:>8.2f}"
            f"{row['latency_p50_seconds']:>8.3f}{row['latency_p99_seconds']:>8.3f}"
        )
    print(
        f"throughput ratio {result['throughput_ratio']:.2f}x (goal >= 3x); "
        f"mean batch {mean_batch:.1f} rows; same texts: {same}"
    )
    out = args.out
    if args.results_dir is not None:
        out = args.results_dir / f"serve_{datetime.date.today().isoformat()}_cpu.json"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
