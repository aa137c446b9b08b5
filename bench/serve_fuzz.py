"""Schemathesis against `polylm serve`: generated requests on every route of its `/openapi.json`.

    python bench/serve_fuzz.py [--requests 5000] [--seed 0] [--out result.json]

Starts `polylm serve` (a subprocess, loopback, free port, --threads 1 --max-batch 4 --max-queue 8) on a tiny model
built the way the tests build theirs (a 2000-piece tokenizer trained on the embedded corpus, hidden 64, 3 layers,
context 32, random weights: generation is fast, so the requests are many). Schemathesis generates --requests
requests from the server's OpenAPI document, seeded: the routes without input (GET /health, /metrics, ...) once
each, the rest split evenly over each POST route, half valid by the document (positive), half not (negative).
Every answer goes through Schemathesis's checks: no 5xx (`not_a_server_error`), a documented status code, a
documented content type, a body (or each server-sent event) that matches the documented schema, and invalid
requests refused with a 4xx (`negative_data_rejection`). Then /health must still say ok.

Reported: requests (by route and mode), statuses, 5xx, schema violations (failures of the other checks), each
distinct failure, and /health after. Writes bench/results/serve_fuzz_<date>_cpu.json (or --out) and exits 1 when
anything failed. `tests/test_serve_fuzz.py` runs the same `fuzz` with about 600 requests.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import hypothesis
import schemathesis
import torch
from _machine import cpu_model
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis import checks as st_checks
from schemathesis.core.failures import FailureGroup

RESULTS = Path(__file__).resolve().parent / "results"
CORPUS = Path(__file__).resolve().parents[1] / "src" / "polylm" / "resources" / "corpus"
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
SERVER_ERROR_CHECK = "not_a_server_error"


def checks() -> list:
    """Schemathesis's checks by name (its `checks` module loads them on first access)."""
    names = (
        SERVER_ERROR_CHECK,
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
    return [getattr(st_checks, name) for name in names]


class Tally:
    """Requests sent, statuses and failures of one fuzzing run, by route."""

    def __init__(self, url: str, seed: int) -> None:
        self.url, self.seed = url, seed
        self.checks = checks()
        self.sent: Counter[tuple[str, str]] = Counter()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.failures: Counter[tuple[str, str, str]] = Counter()
        self.examples: dict[tuple[str, str, str], str] = {}

    def run(self, op: schemathesis.APIOperation, mode: GenerationMode, count: int) -> None:
        """`count` requests generated for `op` in `mode`. Nothing is raised on a failure (so Hypothesis does not
        shrink): each is counted, with its first request as the example."""

        @hypothesis.seed(self.seed)
        @hypothesis.settings(
            max_examples=count,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=op.as_strategy(generation_mode=mode))
        def send(case: schemathesis.Case) -> None:
            self.sent[op.label, mode.value] += 1
            try:
                response = case.call(base_url=self.url, timeout=120)
            except Exception as exc:  # the server closed the connection or hung: a failure like any other
                self.record((op.label, "transport", type(exc).__name__), case, str(exc))
                return
            self.statuses[op.label, response.status_code] += 1
            try:
                case.validate_response(response, checks=self.checks)
            except FailureGroup as group:
                for failure in group.exceptions:
                    check = failure.checks[0] if failure.checks else failure.code
                    self.record((op.label, check, failure.title), case, failure.message)

        send()

    def record(self, key: tuple[str, str, str], case: schemathesis.Case, message: str) -> None:
        self.failures[key] += 1
        self.examples.setdefault(key, f"{json.dumps(case.body, default=repr)[:500]} -> {message[:500]}")

    def summary(self) -> dict:
        by_route: dict[str, dict[str, int]] = {}
        for (label, mode), n in sorted(self.sent.items()):
            by_route.setdefault(label, {})[mode] = n
        statuses: dict[str, dict[str, int]] = {}
        for (label, status), n in sorted(self.statuses.items()):
            statuses.setdefault(label, {})[str(status)] = n
        return {
            "requests": sum(self.sent.values()),
            "seed": self.seed,
            "by_route": by_route,
            "statuses": statuses,
            "server_errors": sum(n for (_, status), n in self.statuses.items() if status >= 500),
            "schema_violations": sum(n for (_, check, _), n in self.failures.items() if check != SERVER_ERROR_CHECK),
            "failures": [
                {
                    "route": label,
                    "check": check,
                    "title": title,
                    "count": n,
                    "example": self.examples[label, check, title],
                }
                for (label, check, title), n in self.failures.most_common()
            ],
        }


def fuzz(url: str, requests: int, seed: int = 0, progress: Callable[[str], None] | None = None) -> dict:
    """About `requests` generated requests against the server at `url`, seeded: a route without input once, the
    rest split evenly over the other routes, half positive, half negative. Counts and distinct failures."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    with_input = [op for op in operations if _has_input(op)]
    plan = [(op, GenerationMode.POSITIVE, 1) for op in operations if not _has_input(op)]
    per_run = max(1, math.ceil((requests - len(plan)) / (2 * len(with_input))))
    plan += [(op, mode, per_run) for op in with_input for mode in MODES]
    tally = Tally(url, seed)
    started = time.monotonic()
    for op, mode, count in plan:
        tally.run(op, mode, count)
        if progress is not None:
            progress(f"{op.label} {mode.value}: {tally.sent[op.label, mode.value]} requests")
    return {**tally.summary(), "seconds": time.monotonic() - started}


def _has_input(op: schemathesis.APIOperation) -> bool:
    """Whether Schemathesis can vary the request (a GET without parameters is one request, with nothing to negate)."""
    return any(len(part) for part in (op.body, op.query, op.headers, op.path_parameters, op.cookies))


def health(url: str) -> tuple[int, object]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def write_model(out: Path) -> dict:
    """The tests' tiny model (tests/serve_support.py's `make_model_dir`) with a 32-token context."""
    from polylm import build_model, count_parameters, save_model
    from polylm.config import ModelConfig
    from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer

    tokenizer = train_tokenizer(
        sorted(CORPUS.glob("*.txt")), out.parent / "tokenizer", TokenizerTrainingConfig(vocab_size=2000)
    )
    config = ModelConfig(
        name="fuzz",
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=32,
        hidden_size=64,
        num_layers=3,
        num_heads=4,
    )
    save_model(build_model(config, seed=0), out, tokenizer=tokenizer)
    return {"vocab_size": config.vocab_size, "context": 32, "parameters": count_parameters(config)}


def start_server(model_dir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "polylm.cli", "serve", "--model", str(model_dir), "--port", str(port)]
    command += ["--threads", "1", "--max-batch", "4", "--max-queue", "8", "--log-level", "warning"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if health(url)[0] == 200:
                return server, url
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError(f"polylm serve did not start: {server.communicate()[1].decode()[-2000:]}")
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="generated requests in all (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis's seed (the same seed, the same requests)")
    parser.add_argument("--out", type=Path, help="results JSON (default: bench/results/serve_fuzz_<date>_cpu.json)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        print("training a tokenizer and writing the model ...", file=sys.stderr)
        model = write_model(Path(tmp) / "model")
        server, url = start_server(Path(tmp) / "model")
        try:
            result = fuzz(url, args.requests, args.seed, progress=lambda line: print(line, file=sys.stderr))
            result["health_after"] = health(url)
        finally:
            server.terminate()
            log = server.communicate(timeout=30)[1].decode(errors="replace")
    result = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "schemathesis": schemathesis.__version__,
        "hypothesis": hypothesis.__version__,
        "model": model,
        "server": "polylm serve --threads 1 --max-batch 4 --max-queue 8",
        **result,
        "server_log_tracebacks": log.count("Traceback"),
    }
    print(f"\n{result['requests']} requests in {result['seconds']:.0f} s (seed {args.seed})")
    for route, modes in result["by_route"].items():
        counts = ", ".join(f"{mode} {n}" for mode, n in modes.items())
        codes = ", ".join(f"{status}: {n}" for status, n in result["statuses"].get(route, {}).items())
        print(f"  {route:<26} {counts:<28} statuses {codes}")
    print(f"5xx responses: {result['server_errors']}")
    print(f"schema violations: {result['schema_violations']}")
    for failure in result["failures"]:
        print(f"  {failure['count']} x {failure['route']} {failure['check']}: {failure['title']}")
        print(f"    {failure['example']}")
    print(f"/health after: {result['health_after'][0]} {result['health_after'][1]}")
    print(f"tracebacks in the server's log: {result['server_log_tracebacks']}")
    out = args.out or RESULTS / f"serve_fuzz_{datetime.date.today().isoformat()}_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    failed = result["failures"] or result["server_errors"] or result["health_after"][0] != 200
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
