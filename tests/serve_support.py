"""Helpers for the serving tests: a small model directory, a uvicorn server on a free loopback port in a
thread or a subprocess, and a raw HTTP client (stdlib only) for requests no SDK would send."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import uvicorn

from conftest import random_model
from polylm.config import ModelConfig
from polylm.hf_checkpoint import save_model
from polylm.tokenizer import Tokenizer

CONTEXT = 128


def make_model_dir(out: Path, tokenizer: Tokenizer, seed: int = 0, context: int = CONTEXT) -> Path:
    config = ModelConfig(
        name="tiny-serve",
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=context,
        hidden_size=64,
        num_layers=3,
        num_heads=4,
    )
    return save_model(random_model(config, seed=seed), out, tokenizer=tokenizer)


def slow_down(model: torch.nn.Module, seconds: float) -> None:
    """Make every forward call take at least `seconds` (to watch streaming, cancellation and timeouts)."""
    model.register_forward_hook(lambda *_: time.sleep(seconds))


class ServerThread:
    """A uvicorn server for `app` on 127.0.0.1:<free port>, in a daemon thread."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_healthy(self.url, timeout)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if request(url, "GET", "/health", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become healthy in {timeout} s")


def start_cli_server(model_dir: Path, *args: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """`polylm serve` in a subprocess; returns the process and its base URL once /health says ok."""
    port = port or free_port()
    command = [sys.executable, "-m", "polylm.cli", "serve", "--model", str(model_dir), "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    process = subprocess.Popen(
        [*command, "--log-level", "warning", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, 120, process)
    except Exception:
        process.kill()
        output = process.communicate(timeout=10)[0].decode(errors="replace")
        raise RuntimeError(f"polylm serve did not come up:\n{output}") from None
    return process, url


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def request(
    url: str,
    method: str,
    path: str,
    body: object = None,
    raw: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 120.0,
) -> tuple[int, object]:
    """One HTTP request; returns (status, parsed JSON or text)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        payload = response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()
    try:
        return response.status, json.loads(payload)
    except json.JSONDecodeError:
        return response.status, payload


def stream_events(url: str, path: str, body: dict, headers: dict | None = None, timeout: float = 120.0) -> list:
    """POST with stream: true and return the parsed SSE data items ("[DONE]" kept as a string)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(
            "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("content-type").startswith("text/event-stream")
        text = response.read().decode()
    finally:
        connection.close()
    items = []
    for event in text.split("\n\n"):
        if event.startswith("data: "):
            data = event[len("data: ") :]
            items.append(data if data == "[DONE]" else json.loads(data))
    return items


def metric(url: str, name: str) -> float:
    """The value of an unlabelled Prometheus sample."""
    status, text = request(url, "GET", "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)
