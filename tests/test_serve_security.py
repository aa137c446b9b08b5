"""Security checks of `polylm serve`: the API key compared in constant time, oversize bodies refused before they are
read or parsed, `model` never taken for a path, and the tokenizer endpoints held to generation's limits."""

from __future__ import annotations

import hmac
import json
import socket
import sys
import threading
import time

import pytest

import polylm.hf_checkpoint
import polylm.hub
import polylm.serve.body
from polylm.generate import TextGenerator
from polylm.hf_checkpoint import load_model
from polylm.serve import ServeSettings, create_app
from polylm.serve.protocol import short_repr
from polylm.serve.state import ServerState
from polylm.tokenizer import Tokenizer
from serve_support import ServerThread, make_model_dir, request

KEY = "s3cret-Key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY_LIMIT = 1024
MAX_PROMPT_TOKENS = 16
MAX_QUEUE = 2
TEXT_LIMIT = MAX_QUEUE * MAX_PROMPT_TOKENS  # what one completions request may carry, /tokenize's limit too
CHAT = [{"role": "user", "content": "Hi"}]
# Every route that reads a body, with a valid one.
BODIES = {
    "/v1/completions": {"prompt": "The river", "max_tokens": 1},
    "/v1/chat/completions": {"messages": CHAT, "max_tokens": 1},
    "/tokenize": {"prompt": "The river"},
    "/detokenize": {"tokens": [5, 6]},
}

# Opens of the watched paths, recorded while `watching` holds the paths (an audit hook cannot be removed, so it is
# installed once and does nothing between the tests that use it).
watching: list[str] = []
opened: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and watching and isinstance(args[0], str | bytes):
        path = args[0] if isinstance(args[0], str) else args[0].decode(errors="replace")
        if any(path.startswith(watched) for watched in watching):
            opened.append(path)


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, corpus_tokenizer):
    return make_model_dir(tmp_path_factory.mktemp("security") / "tiny", corpus_tokenizer)


@pytest.fixture(scope="module")
def loads(model_dir) -> list[str]:
    """The model directories the server's loader was asked for."""
    return []


@pytest.fixture(scope="module")
def server(model_dir, loads):
    def loader() -> TextGenerator:
        loads.append(str(model_dir))
        return TextGenerator(load_model(model_dir), Tokenizer.from_dir(model_dir))

    settings = ServeSettings(
        model=str(model_dir),
        served_model_name="tiny",
        api_key=KEY,
        max_body_bytes=BODY_LIMIT,
        max_prompt_tokens=MAX_PROMPT_TOKENS,
        max_queue=MAX_QUEUE,
        threads=1,
    )
    with ServerThread(create_app(settings, loader=loader)) as running:
        running.wait_ready()
        yield running


@pytest.fixture()
def state(server) -> ServerState:
    return server.server.config.app.state.polylm


def exchange(url: str, head: str, chunks: list[bytes], finish: bool = False) -> tuple[int, dict, float]:
    """Send a request's head and body chunks on a socket, ending a chunked body only when `finish`; read the
    answer. Returns the status, the JSON body and the seconds from the last byte sent to the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"".join(chunks) + (b"0\r\n\r\n" if finish else b""))
        sent = time.monotonic()
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        waited = time.monotonic() - sent
        head_part, _, body = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head_part.lower().split(b"\r\n") if line.startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(65536)
    return int(head_part.split()[1]), json.loads(body.decode()), waited


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# ---- the API key ---------------------------------------------------------------------------------------------


def test_api_key_is_compared_with_compare_digest(server, monkeypatch):
    """The right key passes; a prefix, a longer or an empty key does not, and every bearer token went through
    `hmac.compare_digest` (whose time does not depend on where the first wrong byte is)."""
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert request(server.url, "GET", "/v1/models", headers=AUTH)[0] == 200
    tries = [KEY[:-1], KEY[:4], KEY + "x", "", "S" + KEY[1:], KEY.lower()]
    for token in tries:
        status, body = request(server.url, "GET", "/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert status == 401 and body["error"]["code"] == "invalid_api_key", token
    assert calls == [(token.encode(), KEY.encode()) for token in [KEY, *tries]]
    for headers in ({}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}):
        status, body = request(server.url, "GET", "/v1/models", headers=headers)
        assert status == 401 and "API key" in body["error"]["message"]


@pytest.mark.parametrize("path", [*BODIES, "/tokenizer_info", "/v1/models"])
def test_every_model_route_needs_the_key(server, path):
    method, body = ("POST", BODIES[path]) if path in BODIES else ("GET", None)
    status, answer = request(server.url, method, path, body, headers={"Authorization": "Bearer wrong"})
    assert status == 401 and answer["error"]["type"] == "authentication_error"
    assert request(server.url, method, path, body, headers=AUTH)[0] == 200


def test_a_non_ascii_key_matches_its_utf8_bytes(model_dir):
    key = "clé-ключ"
    settings = ServeSettings(model=str(model_dir), api_key=key, threads=1)
    with ServerThread(create_app(settings)) as server:
        server.wait_ready()
        right = {"Authorization": b"Bearer " + key.encode()}
        assert request(server.url, "GET", "/v1/models", headers=right)[0] == 200
        wrong = {"Authorization": b"Bearer " + key.encode("latin-1", errors="replace")}
        assert request(server.url, "GET", "/v1/models", headers=wrong)[0] == 401


# ---- body size -----------------------------------------------------------------------------------------------


@pytest.fixture()
def parsed(monkeypatch) -> list[bytes]:
    """Bodies that reached `json.loads` in the server's body reader."""
    bodies: list[bytes] = []
    loads = json.loads

    def recording(raw, **kwargs):
        if isinstance(raw, bytes):  # the server's reader; the test's client parses answers from str
            bodies.append(raw)
        return loads(raw, **kwargs)

    monkeypatch.setattr(polylm.serve.body.json, "loads", recording)
    return bodies


@pytest.mark.parametrize("path", list(BODIES))
def test_oversize_invalid_json_is_413_not_400(server, parsed, path):
    """Over the limit and not JSON: 413, so the size was checked first; under it, the same junk is a 400."""
    junk = b"{not json" * (BODY_LIMIT // 9 + 1)
    status, body = request(server.url, "POST", path, raw=junk, headers=AUTH)
    assert status == 413 and body["error"]["code"] == "body_too_large"
    status, body = request(server.url, "POST", path, raw=junk[: BODY_LIMIT - 10], headers=AUTH)
    assert status == 400 and body["error"]["code"] == "invalid_json"
    assert len(parsed) == 1 and len(parsed[0]) < BODY_LIMIT


@pytest.mark.parametrize("path", ["/v1/completions", "/tokenize"])
def test_declared_oversize_body_is_refused_before_it_is_sent(server, parsed, path):
    """Content-Length of 10 GB, 9 bytes sent: the answer comes without waiting for the rest."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10**10}\r\n\r\n"
    )
    status, body, waited = exchange(server.url, head, [b"{not json"])
    assert status == 413 and body["error"]["code"] == "body_too_large" and waited < 5
    assert parsed == []


@pytest.mark.parametrize("path", list(BODIES))
def test_chunked_oversize_body_is_refused_while_it_streams(server, parsed, path):
    """No Content-Length: the chunks are counted as they come; past the limit the answer is 413 at once, before
    the client has even ended the body (it never does here), and nothing was parsed."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    pieces = [chunk(b"[not json" * 40) for _ in range(BODY_LIMIT // 360 + 1)]
    status, body, waited = exchange(server.url, head, pieces)
    assert status == 413 and body["error"]["code"] == "body_too_large" and waited < 5
    assert parsed == []
    status, body, _ = exchange(server.url, head, pieces[:1], finish=True)  # under the limit: parsed, a 400
    assert status == 400 and body["error"]["code"] == "invalid_json" and len(parsed) == 1


# ---- `model` is a name, not a path ---------------------------------------------------------------------------


def test_model_is_never_opened_as_a_path(server, model_dir, loads, tmp_path, corpus_tokenizer, monkeypatch):
    other = make_model_dir(tmp_path / "other", corpus_tokenizer, seed=1)
    (tmp_path / "x").write_text("secret")
    names = ["../../etc/passwd", "/etc/passwd", str(tmp_path / "x"), str(other), str(model_dir), "tiny/../tiny", ""]
    resolved: list[str] = []

    def refuse(*args, **kwargs):
        resolved.append(repr(args))
        raise AssertionError("a request made the server load a model")

    for module, name in ((polylm.hf_checkpoint, "load_model"), (polylm.hub, "resolve_model_dir")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(Tokenizer, "from_dir", refuse)
    watching[:] = ["/etc/passwd", str(tmp_path), str(model_dir)]
    try:
        for name in names:
            for path, body in BODIES.items():
                status, answer = request(server.url, "POST", path, {**body, "model": name}, headers=AUTH)
                assert status == 404, (path, name, answer)
                error = answer["error"]
                assert error["param"] == "model" and error["code"] == "model_not_found"
                assert short_repr(name) in error["message"] and "'tiny'" in error["message"]
    finally:
        watching.clear()
    assert opened == [] and resolved == []
    assert loads == [str(model_dir)]  # once, when the server started
    status, answer = request(server.url, "POST", "/tokenize", {"prompt": "a", "model": "tiny"}, headers=AUTH)
    assert status == 200 and answer["count"] >= 1


def test_a_huge_model_name_is_cut_in_the_message(server):
    status, answer = request(server.url, "POST", "/tokenize", {"prompt": "a", "model": "m" * 900}, headers=AUTH)
    assert status == 404 and len(answer["error"]["message"]) < 200


# ---- the tokenizer endpoints have generation's limits ---------------------------------------------------------


def test_tokenize_is_limited_like_a_completions_request(server):
    """At most what one completions request may send, --max-queue prompts of --max-prompt-tokens tokens (not one
    prompt's limit: lm-eval sends whole documents to /tokenize and cuts its windows itself)."""
    status, body = request(server.url, "POST", "/v1/completions", {"prompt": "word " * 40}, headers=AUTH)
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, body = request(server.url, "POST", "/tokenize", {"prompt": "word " * 200}, headers=AUTH)
    assert status == 400 and body["error"]["code"] == "context_length_exceeded" and body["error"]["param"] == "prompt"
    assert str(TEXT_LIMIT) in body["error"]["message"]
    status, body = request(server.url, "POST", "/tokenize", {"prompt": "word " * 8}, headers=AUTH)
    assert status == 200 and MAX_PROMPT_TOKENS < body["count"] <= TEXT_LIMIT  # a document longer than one prompt
    status, body = request(server.url, "POST", "/detokenize", {"tokens": [5] * (TEXT_LIMIT + 1)}, headers=AUTH)
    assert status == 400 and body["error"]["param"] == "tokens"
    assert request(server.url, "POST", "/detokenize", {"tokens": [5] * TEXT_LIMIT}, headers=AUTH)[0] == 200


def test_long_text_is_refused_before_tokenizing(server, state, monkeypatch):
    """Longer than 16 characters per allowed token (no SentencePiece piece is longer): refused untokenized, as
    completions does."""
    tokenizer = state.generator.tokenizer
    seen: list[int] = []
    monkeypatch.setattr(tokenizer, "encode", lambda text: seen.append(len(text)) or [5])
    status, body = request(server.url, "POST", "/tokenize", {"prompt": "x" * (16 * TEXT_LIMIT + 1)}, headers=AUTH)
    assert status == 400 and body["error"]["code"] == "context_length_exceeded" and seen == []


def test_tokenizer_requests_in_flight_are_bounded_by_max_queue(server, state, monkeypatch):
    """--max-queue tokenizer requests at once; the next one is a 429 (as a full generation queue), for both."""
    tokenizer = state.generator.tokenizer
    release = threading.Event()
    encode = tokenizer.encode

    def slow_encode(text: str) -> list[int]:
        release.wait(30)
        return encode(text)

    monkeypatch.setattr(tokenizer, "encode", slow_encode)
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(request(server.url, "POST", "/tokenize", {"prompt": "a"}, headers=AUTH)[0])
        )
        for _ in range(MAX_QUEUE)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while state.tokenizing < MAX_QUEUE and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        for path, body in (("/tokenize", {"prompt": "b"}), ("/detokenize", {"tokens": [5]})):
            status, answer = request(server.url, "POST", path, body, headers=AUTH)
            assert status == 429 and answer["error"]["type"] == "rate_limit_error", answer
    finally:
        release.set()
        for thread in threads:
            thread.join(30)
    assert results == [200] * MAX_QUEUE and state.tokenizing == 0
    assert request(server.url, "POST", "/tokenize", {"prompt": "b"}, headers=AUTH)[0] == 200
