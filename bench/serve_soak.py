"""Soak test of `polylm serve`: many streaming clients for minutes, a third of them hanging up mid-stream.

    python bench/serve_soak.py [--clients 64] [--minutes 10] [--model DIR] [--out result.json]

Starts `polylm serve` (a subprocess, loopback, free port) on --model, or by default on a tiny model built the way
the tests build theirs (a 2000-piece tokenizer trained on the embedded corpus, hidden 64, 3 layers, context 128,
random weights). --clients threads, each with its own `openai.OpenAI` client, loop for --minutes sending streamed
chat and completion requests (prompts: corpus lines in 18 languages; greedy or sampled, n 1 or 2, 8 to
--max-tokens tokens). Every third client hangs up on each of its requests: it closes the stream after one to three
chunks, or gives up within half a second (its timeout), often while the request still waits in the queue. Those are
the clients' own cancellations, not errors. Anything else that goes wrong is an error: an exception, a non-200, an
error event, a stream that ends without every choice's finish_reason, a client thread still hanging at the end.

Reported: requests, errors by type, cancellations, p50/p99 latency (whole stream, and time to first chunk),
requests/s and tokens/s (and the server's tokens per CPU second early and late after the warm-up: on a shared
machine a slowing server and a busy machine look alike otherwise), the server's RSS (with its children) sampled
every few seconds, and the queue, the KV-cache rows and the requests in flight once the load stops (read from
/metrics until they are back to zero). Acceptance: no errors, RSS growth after the warm-up (--warmup, a share of the
run) under 100 MiB, everything back to zero, no error in the server's log.
Writes bench/results/serve_soak_<date>_cpu.json (or --out) and exits 1 when the acceptance fails.
`tests/test_serve_soak.py` runs the same `soak` for two minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import openai
import psutil
import torch
from _machine import cpu_model

from polylm import build_model, count_parameters, save_model
from polylm.config import ModelConfig
from polylm.hf_checkpoint import read_config
from polylm.tokenizer import Tokenizer, TokenizerTrainingConfig, train_tokenizer

CORPUS = Path(__file__).resolve().parents[1] / "src" / "polylm" / "resources" / "corpus"
RESULTS = Path(__file__).resolve().parent / "results"
MIB = 1024**2
RSS_LIMIT_MIB = 100
MAX_PROMPT_TOKENS = 48
# Gauges that must read 0 once the load has stopped: nothing queued, decoding or held in the KV cache.
IDLE_GAUGES = ("polylm_queue_length", "polylm_running_jobs", "polylm_running_rows", "polylm_kv_cache_rows")
SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


def build_tiny_model(out: Path) -> Path:
    """The shape of the tests' serving model (tests/serve_support.make_model_dir): a step takes milliseconds, so
    the server turns over many requests and any per-request leak shows within minutes."""
    tokenizer = train_tokenizer(
        sorted(CORPUS.glob("*.txt")), out / "tokenizer", TokenizerTrainingConfig(vocab_size=2000)
    )
    config = ModelConfig(
        name="tiny-serve",
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=128,
        hidden_size=64,
        num_layers=3,
        num_heads=4,
    )
    return save_model(build_model(config, seed=0), out / "model", tokenizer=tokenizer)


def corpus_prompts(model_dir: Path, limit: int = MAX_PROMPT_TOKENS) -> list[str]:
    """Corpus lines of every language that leave the model room to answer (at most `limit` tokens)."""
    tokenizer = Tokenizer.from_dir(model_dir)
    lines = [line.strip() for path in sorted(CORPUS.glob("*.txt")) for line in path.read_text("utf-8").splitlines()]
    return [line for line in lines if line and len(tokenizer.encode(line)) <= limit]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics, keyed by name with its labels, e.g. 'polylm_requests_total{...}'."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples[f"{name}{{{labels}}}" if labels else name] = float(value)
    return samples


def start_server(model_dir: Path, log_path: Path, max_batch: int, threads: int | None) -> tuple[subprocess.Popen, str]:
    """`polylm serve` with its log in a file (a pipe nobody reads for ten minutes would block it once full)."""
    port = free_port()
    command = [sys.executable, "-m", "polylm.cli", "serve", "--model", str(model_dir), "--port", str(port)]
    command += ["--max-batch", str(max_batch), "--log-level", "warning"]
    command += ["--threads", str(threads)] if threads else []
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process, url
        except OSError:
            pass
        finally:
            connection.close()
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            process.wait(10)
            raise RuntimeError(f"polylm serve did not come up:\n{log_path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.2)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def rss(process: psutil.Process) -> int:
    """Resident memory of the server and its children (a child that exits while we look is skipped)."""
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@dataclass
class Tally:
    """What the client threads saw, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    completed: int = 0
    cancelled: int = 0
    gave_up: int = 0
    """Cancelled before their first chunk: the client's timeout ran out while the request waited."""
    tokens: int = 0
    latency: list[float] = field(default_factory=list)
    first_chunk: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            if len(self.examples) < 10:
                self.examples.append(f"{kind}: {detail[:300]}")


class Client:
    """One simulated user: its own OpenAI client, its own random stream of requests, until `stop_at`."""

    def __init__(self, index: int, url: str, model: str, prompts: list[str], max_tokens: int, tally: Tally) -> None:
        self.rng = random.Random(index)
        self.cancels = index % 3 == 0  # a third of the clients hang up on every request
        self.api = openai.OpenAI(base_url=url + "/v1", api_key="soak", max_retries=0, timeout=120)
        self.model, self.prompts, self.max_tokens, self.tally = model, prompts, max_tokens, tally

    def run(self, stop_at: float) -> None:
        try:
            while time.monotonic() < stop_at:
                self.one()
        finally:
            self.api.close()

    def one(self) -> None:
        rng = self.rng
        chat = rng.random() < 0.5
        sampled = rng.random() < 0.5
        n = rng.choice([1, 2]) if sampled else 1
        params = {
            "model": self.model,
            "max_tokens": rng.randint(8, self.max_tokens),
            "temperature": 0.8 if sampled else 0.0,
            "seed": rng.randrange(2**31) if sampled else None,
            "n": n,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        prompt = rng.choice(self.prompts)
        cut = rng.randint(0, 3) if self.cancels else None  # chunks to read; 0: give up within half a second
        api = self.api.with_options(timeout=rng.uniform(0.05, 0.5)) if cut == 0 else self.api
        started = time.monotonic()
        first: float | None = None
        chunks, texts, usage = 0, 0, None
        finished: set[int] = set()
        kind = "chat" if chat else "completion"
        try:
            if chat:
                stream = api.chat.completions.create(messages=[{"role": "user", "content": prompt}], **params)
            else:
                stream = api.completions.create(prompt=prompt, **params)
            with stream:  # closing it mid-way drops the connection: the server sees the client go
                for chunk in stream:
                    chunks += 1
                    first = first if first is not None else time.monotonic() - started
                    if chunk.usage is not None:
                        usage = chunk.usage.completion_tokens
                    for choice in chunk.choices:
                        texts += bool(choice.delta.content if chat else choice.text)
                        if choice.finish_reason is not None:
                            finished.add(choice.index)
                    if cut is not None and chunks >= cut and len(finished) < n:
                        break
        except openai.APITimeoutError as exc:
            if cut != 0:
                self.tally.error(f"{kind}: {type(exc).__name__}", str(exc))
                return
            with self.tally.lock:
                self.tally.cancelled += 1
                self.tally.gave_up += 1
            return
        except openai.APIStatusError as exc:
            self.tally.error(f"{kind}: HTTP {exc.status_code}", str(exc))
            return
        except Exception as exc:
            self.tally.error(f"{kind}: {type(exc).__name__}", str(exc))
            return
        elapsed = time.monotonic() - started
        hung_up = cut is not None and len(finished) < n
        if not hung_up and (len(finished) < n or usage is None):
            self.tally.error(f"{kind}: unfinished stream", f"{chunks} chunks, finished {sorted(finished)} of {n}")
            return
        with self.tally.lock:
            if first is not None:
                self.tally.first_chunk.append(first)
            if hung_up:
                self.tally.cancelled += 1
                self.tally.tokens += texts
            else:
                self.tally.completed += 1
                self.tally.tokens += usage
                self.tally.latency.append(elapsed)


def soak(
    model_dir: Path,
    clients: int = 64,
    seconds: float = 600.0,
    max_batch: int = 16,
    max_tokens: int = 32,
    warmup: float = 0.2,
    sample_every: float = 2.0,
    threads: int | None = None,
    settle_timeout: float = 60.0,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> dict:
    """Run the soak against a fresh `polylm serve` on `model_dir`; returns the figures (see `failures`)."""
    prompts = corpus_prompts(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        process, url = start_server(model_dir, log_path, max_batch, threads)
        try:
            result = _load(
                process, url, prompts, clients, seconds, max_tokens, warmup, sample_every, settle_timeout, progress
            )
        finally:
            stop_server(process)
        log = log_path.read_text(errors="replace")
    result["server_log_errors"] = [line for line in log.splitlines() if "Traceback" in line or "ERROR" in line][:20]
    return result


def _load(
    process: subprocess.Popen,
    url: str,
    prompts: list[str],
    clients: int,
    seconds: float,
    max_tokens: int,
    warmup: float,
    sample_every: float,
    settle_timeout: float,
    progress: Callable[[str], None],
) -> dict:
    server = psutil.Process(process.pid)
    model = openai.OpenAI(base_url=url + "/v1", api_key="soak", max_retries=0).models.list().data[0].id
    before = scrape(url)
    tally = Tally()
    started = time.monotonic()

    def sample(gauges: dict[str, float]) -> dict:
        return {
            "t": round(time.monotonic() - started, 1),
            "rss_mib": round(rss(server) / MIB, 1),
            "cpu_s": round(cpu_seconds(server), 2),
            "load1": round(os.getloadavg()[0], 2),
            "generated": gauges["polylm_generated_tokens_total"],
            "queue": gauges["polylm_queue_length"],
            "rows": gauges["polylm_kv_cache_rows"],
        }

    timeline = [sample(before)]
    stop_at = started + seconds
    workers = [Client(index, url, model, prompts, max_tokens, tally) for index in range(clients)]
    threads = [threading.Thread(target=w.run, args=(stop_at,), name=f"soak-{i}") for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    next_report = started + 60
    while time.monotonic() < stop_at:
        timeline.append(sample(scrape(url)))
        if time.monotonic() >= next_report:
            with tally.lock:
                progress(
                    f"{timeline[-1]['t']:5.0f} s: {tally.completed} completed, {tally.cancelled} cancelled, "
                    f"{sum(tally.errors.values())} errors, RSS {timeline[-1]['rss_mib']:.0f} MiB, "
                    f"load {timeline[-1]['load1']}"
                )
            next_report += 60
        time.sleep(max(0.0, min(sample_every, stop_at - time.monotonic())))
    for thread in threads:
        thread.join(max(1.0, stop_at + 180 - time.monotonic()))
    wall = time.monotonic() - started
    hanging = sum(thread.is_alive() for thread in threads)
    if hanging:
        tally.error("client thread still running 180 s after the end", f"{hanging} threads")

    settled_after, after = None, scrape(url)
    deadline = time.monotonic() + settle_timeout
    while True:
        idle = all(after.get(name) == 0 for name in IDLE_GAUGES) and after.get("polylm_requests_in_flight") == 1
        if idle:  # the one request in flight is this scrape
            settled_after = round(time.monotonic() - started - wall, 2)
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
        after = scrape(url)
    timeline.append(sample(after))

    warm = [entry for entry in timeline if entry["t"] >= warmup * seconds]
    half = len(warm) // 2
    statuses = Counter()
    for key, value in after.items():
        if key.startswith("polylm_requests_total{"):
            statuses[re.search(r'status="(\d+)"', key).group(1)] += value - before.get(key, 0)
    served = tally.completed + tally.cancelled

    def delta(name: str) -> float:
        return after[name] - before[name]

    return {
        "clients": clients,
        "cancelling_clients": sum(w.cancels for w in workers),
        "seconds": seconds,
        "wall_seconds": round(wall, 1),
        "requests": served,
        "completed": tally.completed,
        "cancelled": tally.cancelled,
        "cancelled_before_first_chunk": tally.gave_up,
        "errors": sum(tally.errors.values()),
        "errors_by_type": dict(tally.errors),
        "error_examples": tally.examples,
        "latency_p50_seconds": percentile(tally.latency, 0.5),
        "latency_p99_seconds": percentile(tally.latency, 0.99),
        "first_chunk_p50_seconds": percentile(tally.first_chunk, 0.5),
        "first_chunk_p99_seconds": percentile(tally.first_chunk, 0.99),
        "requests_per_second": served / wall,
        "client_tokens_per_second": tally.tokens / wall,
        "server_generated_tokens_per_second": delta("polylm_generated_tokens_total") / wall,
        "server_mean_batch_rows": delta("polylm_engine_step_rows_total") / max(1.0, delta("polylm_engine_steps_total")),
        "server_tokens_per_cpu_second_early_late": [per_cpu_second(warm[: half + 1]), per_cpu_second(warm[half:])],
        "server_status_counts": {status: int(count) for status, count in sorted(statuses.items()) if count},
        "server_cancelled_jobs": int(delta("polylm_cancelled_jobs_total")),
        "warmup_seconds": round(warmup * seconds, 1),
        "rss_start_mib": timeline[0]["rss_mib"],
        "rss_after_warmup_mib": warm[0]["rss_mib"],
        "rss_peak_after_warmup_mib": max(entry["rss_mib"] for entry in warm),
        "rss_end_mib": timeline[-1]["rss_mib"],
        "rss_growth_after_warmup_mib": round(max(entry["rss_mib"] for entry in warm) - warm[0]["rss_mib"], 1),
        "rss_slope_after_warmup_mib_per_minute": round(slope([(e["t"], e["rss_mib"]) for e in warm]) * 60, 2),
        "kv_cache_bytes_after": after.get("polylm_kv_cache_bytes"),
        "after_load": {name: after.get(name) for name in IDLE_GAUGES}
        | {"requests_in_flight_besides_the_scrape": after.get("polylm_requests_in_flight", 1) - 1},
        "back_to_zero_after_seconds": settled_after,
        "timeline": timeline,
    }


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of the server and its children: tokens per CPU second tells a slowing server from a busy machine."""
    total = sum(process.cpu_times()[:2])
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def per_cpu_second(samples: list[dict]) -> float | None:
    """Tokens the server generated per second of its CPU time between the first and the last sample."""
    cpu = samples[-1]["cpu_s"] - samples[0]["cpu_s"] if len(samples) > 1 else 0.0
    return round((samples[-1]["generated"] - samples[0]["generated"]) / cpu, 1) if cpu > 0 else None


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (MiB per second): a steady leak shows here even when it is below the limit."""
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread if spread else 0.0


def failures(result: dict, rss_limit_mib: float = RSS_LIMIT_MIB) -> list[str]:
    """The acceptance: what went wrong, empty when the soak passed."""
    problems = []
    if result["errors"]:
        problems.append(f"{result['errors']} errors: {result['errors_by_type']}; first: {result['error_examples'][:3]}")
    if not result["completed"] or (result["cancelling_clients"] and not result["cancelled"]):
        problems.append(f"too little traffic: {result['completed']} completed, {result['cancelled']} cancelled")
    if result["rss_growth_after_warmup_mib"] >= rss_limit_mib:
        problems.append(
            f"RSS grew {result['rss_growth_after_warmup_mib']} MiB after the warm-up (limit {rss_limit_mib})"
        )
    if result["back_to_zero_after_seconds"] is None:
        problems.append(f"not back to zero after the load: {result['after_load']}")
    if result.get("server_log_errors"):
        problems.append(f"the server logged errors: {result['server_log_errors'][:3]}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", type=Path, help="a model directory (default: a tiny random model built here)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32, help="longest answer asked for (8 to this)")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of the run before RSS growth is measured")
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--threads", type=int, help="torch threads of the server (polylm serve --threads)")
    parser.add_argument("--out", type=Path, help="results JSON (default: bench/results/serve_soak_<date>_cpu.json)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            print("training a tokenizer and writing the model ...", file=sys.stderr)
            model_dir = build_tiny_model(Path(tmp))
        config = read_config(model_dir)
        load_before = os.getloadavg()
        print(f"{args.clients} clients for {args.minutes:g} minutes ...", file=sys.stderr)
        result = soak(
            model_dir,
            clients=args.clients,
            seconds=args.minutes * 60,
            max_batch=args.max_batch,
            max_tokens=args.max_tokens,
            warmup=args.warmup,
            sample_every=args.sample_every,
            threads=args.threads,
        )
    load_after = os.getloadavg()
    problems = failures(result)
    result = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "torch": torch.__version__,
        "openai": openai.__version__,
        "model": str(args.model) if args.model else "tiny, random weights (the tests' serving model)",
        "model_shape": {k: getattr(config, k) for k in ("vocab_size", "hidden_size", "num_layers", "num_heads")},
        "parameters": count_parameters(config),
        "max_batch": args.max_batch,
        "max_tokens": args.max_tokens,
        **result,
        "passed": not problems,
        "problems": problems,
    }
    report(result)
    out = args.out or RESULTS / f"serve_soak_{datetime.date.today().isoformat()}_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    sys.exit(0 if not problems else 1)


def report(result: dict) -> None:
    """The figures a reader checks first; the JSON has the rest (timeline, statuses, examples)."""

    def seconds(key: str) -> str:
        return "-" if result[key] is None else f"{result[key]:.3f} s"

    print(f"\nmodel: {result['model']} ({result['parameters']:,} parameters), max batch {result['max_batch']}")
    print(f"machine: {result['machine']}; 1-minute load average before / after: {result['load_average_before_after']}")
    print(
        f"{result['clients']} clients ({result['cancelling_clients']} hanging up mid-stream) "
        f"for {result['wall_seconds']:.0f} s"
    )
    print(
        f"requests {result['requests']}: {result['completed']} completed, {result['cancelled']} cancelled by their "
        f"client ({result['cancelled_before_first_chunk']} before the first chunk; "
        f"{result['server_cancelled_jobs']} jobs cancelled in the engine), errors {result['errors']}"
        + (f" {result['errors_by_type']}" if result["errors"] else "")
    )
    print(
        f"latency p50 / p99: {seconds('latency_p50_seconds')} / {seconds('latency_p99_seconds')} (whole stream); "
        f"first chunk {seconds('first_chunk_p50_seconds')} / {seconds('first_chunk_p99_seconds')}"
    )
    print(
        f"throughput: {result['requests_per_second']:.2f} requests/s, {result['client_tokens_per_second']:.0f} "
        f"tokens/s received ({result['server_generated_tokens_per_second']:.0f} generated; "
        f"mean batch {result['server_mean_batch_rows']:.1f} rows)"
    )
    early, late = result["server_tokens_per_cpu_second_early_late"]
    print(f"server tokens per CPU second after the warm-up, first half / second half: {early} / {late}")
    print(
        f"RSS start {result['rss_start_mib']:.0f} MiB, after warm-up ({result['warmup_seconds']:.0f} s) "
        f"{result['rss_after_warmup_mib']:.0f} MiB, peak after {result['rss_peak_after_warmup_mib']:.0f} MiB, "
        f"end {result['rss_end_mib']:.0f} MiB: growth {result['rss_growth_after_warmup_mib']:.1f} MiB "
        f"(limit {RSS_LIMIT_MIB}), slope {result['rss_slope_after_warmup_mib_per_minute']:+.2f} MiB/min"
    )
    settled = result["back_to_zero_after_seconds"]
    print(
        f"after the load: {result['after_load']}, KV cache {result['kv_cache_bytes_after']:.0f} bytes"
        f" ({'back to zero after ' + format(settled, '.1f') + ' s' if settled is not None else 'NOT back to zero'})"
    )
    print("PASSED" if result["passed"] else "FAILED:\n  " + "\n  ".join(result["problems"]))


if __name__ == "__main__":
    main()
