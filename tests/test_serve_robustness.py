"""Bad input gets a 4xx with a message and never a 5xx; limits (429, 503), auth, cancellation, the CLI,
and 64 concurrent clients against a `polylm serve` process."""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import threading
import time

import openai
import psutil
import pytest

from polylm.cli import main
from polylm.generate import TextGenerator
from polylm.hf_checkpoint import load_model
from polylm.serve import ServeSettings, create_app, is_loopback
from polylm.tokenizer import Tokenizer
from serve_support import (
    CONTEXT,
    ServerThread,
    make_model_dir,
    metric,
    request,
    slow_down,
    start_cli_server,
    stop,
)

OK = {"prompt": "The river", "max_tokens": 2, "temperature": 0}
CHAT = [{"role": "user", "content": "Hi"}]

# (path, body or raw bytes, expected status, the parameter the error must name or None)
BAD_REQUESTS = [
    ("/v1/completions", b"{bad json", 400, None),
    ("/v1/completions", b"", 400, None),
    ("/v1/completions", b"\xff\xfe\x00garbage", 400, None),
    ("/v1/completions", b"[1, 2, 3]", 400, None),
    ("/v1/completions", b'{"prompt": "a", "temperature": NaN}', 400, None),
    ("/v1/completions", b"[" * 100_000 + b"]" * 100_000, 400, None),
    ("/v1/completions", {}, 400, "prompt"),
    ("/v1/completions", {"prompt": 5}, 400, "prompt"),
    ("/v1/completions", {"prompt": []}, 400, "prompt"),
    ("/v1/completions", {"prompt": [1, "a"]}, 400, "prompt"),
    ("/v1/completions", {"prompt": [[]]}, 400, "prompt"),
    ("/v1/completions", {"prompt": [10**9]}, 400, "prompt"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"prompt": "a", "max_tokens": -1}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "max_tokens": "5"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 1.5}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "max_tokens": True}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"prompt": "a", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"prompt": "a", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"prompt": "a", "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {"prompt": "a", "n": 0}, 400, "n"),
    ("/v1/completions", {"prompt": "a", "n": 10_000}, 400, "n"),
    ("/v1/completions", {"prompt": "a", "n": 9, "temperature": 1}, 400, "n"),
    ("/v1/completions", {"prompt": "a", "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {"prompt": "a", "stop": 3}, 400, "stop"),
    ("/v1/completions", {"prompt": "a", "stop": [""]}, 400, "stop"),
    ("/v1/completions", {"prompt": "a", "stop": ["x"] * 100}, 400, "stop"),
    ("/v1/completions", {"prompt": "a", "logprobs": 50}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "a", "logprobs": True}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "a", "echo": "no"}, 400, "echo"),
    ("/v1/completions", {"prompt": "a", "seed": "x"}, 400, "seed"),
    ("/v1/completions", {"prompt": "a", "num_beams": 0}, 400, "num_beams"),
    ("/v1/completions", {"prompt": "a", "use_beam_search": True, "num_beams": 16}, 400, "num_beams"),
    ("/v1/completions", {"prompt": "a", "use_beam_search": True, "num_beams": 4, "n": 5}, 400, "n"),
    ("/v1/completions", {"prompt": "a", "use_beam_search": True, "logprobs": 1}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "a", "early_stopping": "sometimes"}, 400, "early_stopping"),
    ("/v1/completions", {"prompt": "a", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ("/v1/completions", {"prompt": "a", "frequency_penalty": 1.0}, 400, "frequency_penalty"),
    ("/v1/completions", {"prompt": "a", "logit_bias": {"5": 1}}, 400, "logit_bias"),
    ("/v1/completions", {"prompt": "a", "best_of": 3}, 400, "best_of"),
    ("/v1/completions", {"prompt": "a", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("/v1/completions", {"prompt": "a", "model": "gpt-4"}, 404, "model"),
    ("/v1/completions", {"prompt": "word " * 400}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x" * 3_000_000}, 400, "prompt"),
    ("/v1/completions", {"prompt": ["a"] * 1000}, 400, "prompt"),
    ("/v1/chat/completions", {}, 400, "messages"),
    ("/v1/chat/completions", {"messages": "Hi"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "Hi"}]}, 400, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        400,
        "messages",
    ),
    ("/v1/chat/completions", {"messages": CHAT, "template": "nope"}, 400, "template"),
    ("/v1/chat/completions", {"messages": CHAT, "top_logprobs": 2}, 400, "top_logprobs"),
    ("/v1/chat/completions", {"messages": CHAT, "max_completion_tokens": -3}, 400, "max_completion_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 400}]}, 400, "messages"),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, corpus_tokenizer):
    return make_model_dir(tmp_path_factory.mktemp("serve") / "tiny", corpus_tokenizer)


@pytest.fixture(scope="module")
def server(model_dir):
    settings = ServeSettings(
        model=str(model_dir), served_model_name="tiny", max_batch=8, max_body_bytes=4 * 1024 * 1024
    )
    with ServerThread(create_app(settings)) as running:
        running.wait_ready()
        yield running


def slow_loader(model_dir, seconds: float, ready: threading.Event | None = None):
    def load() -> TextGenerator:
        if ready is not None:
            ready.wait(30)
        model = load_model(model_dir)
        slow_down(model, seconds)
        return TextGenerator(model, Tokenizer.from_dir(model_dir))

    return load


def assert_serving(url: str) -> None:
    assert request(url, "GET", "/health")[0] == 200
    status, body = request(url, "POST", "/v1/completions", OK)
    assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize(("path", "body", "status", "param"), BAD_REQUESTS, ids=range(len(BAD_REQUESTS)))
def test_bad_requests_get_4xx_naming_the_problem(server, path, body, status, param):
    raw = body if isinstance(body, bytes) else None
    got, answer = request(server.url, "POST", path, body=None if raw is not None else body, raw=raw)
    assert got == status, answer
    error = answer["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param and param.split(".")[0] in error["message"]


def test_server_keeps_serving_after_bad_input(server):
    for path, body, _, _ in BAD_REQUESTS[::3]:
        raw = body if isinstance(body, bytes) else None
        request(server.url, "POST", path, body=None if raw is not None else body, raw=raw)
    assert_serving(server.url)
    status, text = request(server.url, "GET", "/metrics")
    assert status == 200 and 'status="500"' not in text


def test_other_http_errors_are_openai_shaped(server):
    status, body = request(server.url, "GET", "/v1/nothing")
    assert status == 404 and "error" in body
    status, body = request(server.url, "GET", "/v1/completions")
    assert status == 405 and "error" in body
    status, body = request(server.url, "POST", "/v1/completions", raw=b"x" * (5 * 1024 * 1024))
    assert status == 413 and body["error"]["code"] == "body_too_large"


def test_prompt_exactly_filling_the_context(server, corpus_tokenizer):
    ids = [5] * CONTEXT
    status, body = request(server.url, "POST", "/v1/completions", {"prompt": ids, "max_tokens": 1})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, body = request(server.url, "POST", "/v1/completions", {"prompt": ids[:-1], "max_tokens": 50})
    assert status == 200 and body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 1


def test_openai_client_sees_errors_as_exceptions(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny", prompt="a", max_tokens=-5)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="a")


def test_bearer_auth(model_dir):
    settings = ServeSettings(model=str(model_dir), served_model_name="tiny", api_key="s3cret")
    with ServerThread(create_app(settings)) as server:
        server.wait_ready()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, body = request(server.url, "POST", "/v1/completions", OK, headers=headers)
            assert status == 401 and "API key" in body["error"]["message"]
            assert request(server.url, "GET", "/v1/models", headers=headers)[0] == 401
        status, _ = request(server.url, "POST", "/v1/completions", OK, headers={"Authorization": "Bearer s3cret"})
        assert status == 200
        assert request(server.url, "GET", "/health")[0] == 200  # probes need no key
        good = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model="tiny", prompt="a", max_tokens=1).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_health_is_503_while_loading(model_dir):
    ready = threading.Event()
    app = create_app(ServeSettings(model=str(model_dir)), loader=slow_loader(model_dir, 0.0, ready))
    with ServerThread(app) as server:
        assert request(server.url, "GET", "/health") == (503, {"status": "loading"})
        status, body = request(server.url, "POST", "/v1/completions", OK)
        assert status == 503 and body["error"]["code"] == "model_not_ready"
        ready.set()
        server.wait_ready(30)
        assert_serving(server.url)


def test_queue_full_is_429_and_timeout_is_503(model_dir):
    settings = ServeSettings(model=str(model_dir), max_batch=1, max_queue=1, timeout=1.0)
    with ServerThread(create_app(settings, loader=slow_loader(model_dir, 0.05))) as server:
        server.wait_ready()
        long_request = {"prompt": "The river", "max_tokens": 60, "temperature": 0}
        results = {}

        def send(name, body):
            results[name] = request(server.url, "POST", "/v1/completions", body)

        running = threading.Thread(target=send, args=("running", long_request))
        running.start()
        time.sleep(0.5)  # it holds the only row; the next one waits in the queue
        queued = threading.Thread(target=send, args=("queued", OK))
        queued.start()
        time.sleep(0.2)
        status, body = request(server.url, "POST", "/v1/completions", OK)
        assert status == 429 and body["error"]["type"] == "rate_limit_error"
        running.join(30)
        queued.join(30)
        assert results["running"][0] == 503 and results["running"][1]["error"]["code"] == "timeout"
        assert results["queued"][0] in (200, 503)
        assert metric(server.url, "polylm_timed_out_jobs_total") >= 1
        assert_serving(server.url)


def _open_and_drop(url: str, path: str, body: dict, read_bytes: int) -> None:
    """Send a request, read a little of the answer (or none), then close the connection."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    received = b""
    while len(received) < read_bytes:
        received += sock.recv(4096)
    if not read_bytes:
        time.sleep(0.3)  # let the job start before going away
    sock.close()


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_generation(model_dir, stream):
    with ServerThread(create_app(ServeSettings(model=str(model_dir)), loader=slow_loader(model_dir, 0.03))) as server:
        server.wait_ready()
        body = {"prompt": "The river", "max_tokens": 100, "temperature": 0, "stream": stream}
        _open_and_drop(server.url, "/v1/completions", body, read_bytes=600 if stream else 0)
        deadline = time.monotonic() + 10
        while metric(server.url, "polylm_cancelled_jobs_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(server.url, "polylm_cancelled_jobs_total") == 1
        assert metric(server.url, "polylm_running_rows") == 0
        assert metric(server.url, "polylm_generated_tokens_total") < 100
        assert_serving(server.url)


def test_refuses_non_local_bind_without_key(model_dir, capsys):
    assert main(["serve", "--model", str(model_dir), "--host", "0.0.0.0"]) == 1
    assert "--api-key" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.9")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")
    assert main(["serve", "--model", str(model_dir), "--max-batch", "0"]) == 1


def test_serve_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--model", "--host", "--port", "--api-key", "--max-batch", "--max-prompt-tokens"):
        assert flag in out


def test_polylm_serve_process(model_dir):
    process, url = start_cli_server(model_dir, "--max-prompt-tokens", "16", "--api-key", "k", "--threads", "1")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        assert client.models.list().data[0].id == "tiny"
        assert client.completions.create(model="tiny", prompt="The river", max_tokens=3).choices[0].text is not None
        status, body = request(
            url, "POST", "/v1/completions", {"prompt": "word " * 40}, headers={"Authorization": "Bearer k"}
        )
        assert status == 400 and "--max-prompt-tokens" in body["error"]["message"]
    finally:
        stop(process)


@pytest.mark.slow
def test_64_concurrent_clients_no_errors_bounded_memory(model_dir):
    """64 clients for a bounded time (POLYLM_SERVE_SOAK_SECONDS, default 20) against a `polylm serve` process,
    loopback only: every request answered 200, the process's memory flat after warm-up."""
    seconds = float(os.environ.get("POLYLM_SERVE_SOAK_SECONDS", "20"))
    process, url = start_cli_server(model_dir, "--max-batch", "16")
    server = psutil.Process(process.pid)
    stop_at = time.monotonic() + seconds
    errors: list[str] = []
    counts = [0] * 64
    memory: list[tuple[float, int]] = []

    def client(index: int) -> None:
        rng = random.Random(index)
        while time.monotonic() < stop_at:
            kind = rng.choice(["completion", "chat", "stream", "beam", "echo"])
            try:
                if kind == "completion":
                    status, body = request(
                        url,
                        "POST",
                        "/v1/completions",
                        {
                            "prompt": "The river " * rng.randint(1, 6),
                            "max_tokens": rng.randint(1, 24),
                            "n": rng.randint(1, 2),
                        },
                    )
                elif kind == "chat":
                    status, body = request(
                        url,
                        "POST",
                        "/v1/chat/completions",
                        {"messages": CHAT, "max_tokens": rng.randint(1, 24), "temperature": 0},
                    )
                elif kind == "beam":
                    status, body = request(
                        url,
                        "POST",
                        "/v1/completions",
                        {"prompt": "Le marché", "max_tokens": 8, "use_beam_search": True, "num_beams": 4},
                    )
                elif kind == "echo":
                    status, body = request(
                        url,
                        "POST",
                        "/v1/completions",
                        {"prompt": "Привет мир", "max_tokens": 0, "echo": True, "logprobs": 1},
                    )
                else:
                    host, port = url.removeprefix("http://").split(":")
                    connection = http.client.HTTPConnection(host, int(port), timeout=120)
                    payload = {"messages": CHAT, "max_tokens": rng.randint(1, 24), "stream": True}
                    connection.request(
                        "POST", "/v1/chat/completions", json.dumps(payload), {"Content-Type": "application/json"}
                    )
                    response = connection.getresponse()
                    status, text = response.status, response.read().decode()
                    connection.close()
                    body = text if text.rstrip().endswith("data: [DONE]") else f"stream not finished: {text[-200:]}"
                if status != 200 or (isinstance(body, str) and body.startswith("stream not finished")):
                    errors.append(f"{kind}: {status} {str(body)[:200]}")
                counts[index] += 1
            except Exception as exc:
                errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    try:
        for thread in threads:
            thread.start()
        while time.monotonic() < stop_at:
            memory.append((time.monotonic(), server.memory_info().rss))
            time.sleep(0.5)
        for thread in threads:
            thread.join(180)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == [], errors[:5]
        assert sum(counts) >= 64 and min(counts) >= 1
        assert metric(url, "polylm_running_rows") == 0 and metric(url, "polylm_queue_length") == 0
        settled = [rss for _, rss in memory[len(memory) // 3 :]]
        assert max(settled) - min(settled) < 150 * 1024**2, f"RSS grew from {min(settled)} to {max(settled)}"
    finally:
        stop(process)
    print(
        f"\n{sum(counts)} requests by 64 clients in {seconds:.0f} s, 0 errors, "
        f"RSS {max(r for _, r in memory) / 1024**2:.0f} MiB max"
    )
