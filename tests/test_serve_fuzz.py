"""Schemathesis against `polylm serve`: about 600 generated requests, valid and invalid by the server's `/openapi.json`,
on every route (bench/serve_fuzz.py's `fuzz`, seeded; the bench sends 5000), and what it found, kept as plain
requests."""

from __future__ import annotations

import sys
import time

import pytest
import requests
import schemathesis
from schemathesis.core.failures import FailureGroup

from conftest import REPO
from polylm.serve import ServeSettings, create_app
from serve_support import ServerThread, make_model_dir, request, stream_events

sys.path.insert(0, str(REPO / "bench"))  # bench/ is not a package: its scripts import `_machine` as a module
from serve_fuzz import checks, fuzz

pytestmark = pytest.mark.slow

REQUESTS = 600
CONTEXT = 32  # a short context keeps every generation short: the 605 requests take about 25 s
ROUTES = {
    ("/v1/completions", "post"),
    ("/v1/chat/completions", "post"),
    ("/tokenize", "post"),
    ("/detokenize", "post"),
    ("/tokenizer_info", "get"),
    ("/v1/models", "get"),
    ("/health", "get"),
    ("/metrics", "get"),
    ("/", "get"),
}
CHAT = [{"role": "user", "content": "Hi"}]

# What Schemathesis found, each once a 500 (or a 400 for a request the document calls valid), as plain requests:
# (path, body, status now, the parameter a 400 must name).
FOUND_BY_SCHEMATHESIS = [
    # repetition_penalty 5e-324: logits / penalty overflowed to inf and sampling read NaN probabilities (500);
    # now 0.01 to 100, as documented
    ("/v1/completions", {"prompt": "0", "repetition_penalty": 5e-324}, 400, "repetition_penalty"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}], "repetition_penalty": 5e-324}, 400, "repetition_penalty"),
    # length_penalty 4.6e16 with beam search: length ** length_penalty overflowed (OverflowError, 500); now -10 to 10
    (
        "/v1/completions",
        {"prompt": "a", "use_beam_search": True, "length_penalty": 4.6e16, "max_tokens": 2},
        400,
        "length_penalty",
    ),
    # seed -8e24: torch.Generator.manual_seed takes 64 bits (ValueError, 500); now -2**63 to 2**64 - 1
    (
        "/v1/chat/completions",
        {"messages": CHAT, "use_beam_search": True, "seed": -8152412965255123268796416},
        400,
        "seed",
    ),
    # 5 prompts with echo + logprobs: 10 engine jobs, more than --max-queue 8, so a 429 that no retry could cure
    # (found by bench/serve_fuzz.py's 5000 requests); now a 400
    ("/v1/completions", {"prompt": ["a"] * 5, "echo": True, "logprobs": 1, "max_tokens": 1}, 400, "prompt"),
    ("/v1/completions", {"prompt": ["a"] * 4, "echo": True, "logprobs": 1, "max_tokens": 1}, 200, None),
    # "n": 1.0 and "max_tokens": 2.0 are JSON Schema integers, but were refused (400): JSON has one number type
    ("/v1/completions", {"prompt": "a", "max_tokens": 2.0, "n": 1.0, "ignore_eos": True}, 200, None),
    ("/detokenize", {"tokens": [5.0, 6]}, 200, None),
]
# Found by hand next to those while writing the document: Hypothesis's strings hold no lone surrogates, and its
# temperatures did not come close enough to 0.
FOUND_BY_HAND = [
    # temperature 1e-300: logits / temperature overflowed, NaN again (500); below 1e-5 now decodes greedily
    ("/v1/completions", {"prompt": "a", "temperature": 1e-300, "max_tokens": 2}, 200, None),
    # a lone UTF-16 surrogate escape: SentencePiece refused the str (TypeError / RuntimeError, 500); now a 400
    ("/v1/completions", {"prompt": "\ud800", "max_tokens": 2}, 400, None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a\udfffb"}]}, 400, None),
    ("/tokenize", {"prompt": "\udc00"}, 400, None),
    # the seed's whole range works
    ("/v1/completions", {"prompt": "a", "seed": 2**64 - 1, "max_tokens": 2}, 200, None),
    ("/v1/completions", {"prompt": "a", "seed": -(2**63), "max_tokens": 2}, 200, None),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory, corpus_tokenizer):
    model_dir = make_model_dir(tmp_path_factory.mktemp("fuzz") / "tiny", corpus_tokenizer, context=CONTEXT)
    settings = ServeSettings(model=str(model_dir), served_model_name="tiny", max_batch=4, max_queue=8, threads=1)
    with ServerThread(create_app(settings)) as running:
        running.wait_ready()
        yield running


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server):
    started = time.monotonic()
    result = fuzz(server.url, REQUESTS, seed=0)
    seconds = time.monotonic() - started
    assert result["failures"] == [], result["failures"][:5]
    assert result["server_errors"] == 0 and result["schema_violations"] == 0
    assert result["requests"] >= 300
    routes = result["by_route"]
    assert {label.split()[1] for label in routes} == {path for path, _ in ROUTES}
    for label, modes in routes.items():
        if label.startswith("POST"):  # a GET here takes no input: one request, nothing to negate
            assert modes["positive"] >= 70 and modes["negative"] >= 70, (label, modes)
    answered = {status for statuses in result["statuses"].values() for status in statuses}
    assert {"200", "400", "404"} <= answered and not any(status.startswith("5") for status in answered)
    assert request(server.url, "GET", "/health") == (200, {"status": "ok", "model": "tiny"})
    status, body = request(server.url, "POST", "/v1/completions", {"prompt": "The river", "max_tokens": 2})
    assert status == 200 and body["usage"]["completion_tokens"] >= 1
    print(f"\n{result['requests']} requests in {seconds:.1f} s: 0 5xx, 0 schema violations; {routes}")


@pytest.mark.parametrize(("path", "body", "status", "param"), FOUND_BY_SCHEMATHESIS + FOUND_BY_HAND)
def test_found_cases_stay_fixed(server, path, body, status, param):
    got, answer = request(server.url, "POST", path, body)
    assert got == status, answer
    if status == 400:
        assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["param"] == param
    elif path == "/v1/completions":
        choice = answer["choices"][0]
        assert choice["finish_reason"] in ("stop", "length") and answer["usage"]["prompt_tokens"] >= 1


def test_integral_floats_are_integers(server):
    _, body = request(server.url, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 2.0, "ignore_eos": True})
    assert body["usage"]["completion_tokens"] == 2
    status, body = request(server.url, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 1.5})
    assert status == 400 and body["error"]["param"] == "max_tokens"


def test_tiny_temperature_decodes_greedily(server):
    base = {"prompt": "The river", "max_tokens": 6, "ignore_eos": True}
    greedy = request(server.url, "POST", "/v1/completions", {**base, "temperature": 0})[1]
    tiny = request(server.url, "POST", "/v1/completions", {**base, "temperature": 1e-300, "seed": 3})[1]
    assert tiny["choices"][0]["text"] == greedy["choices"][0]["text"]


def test_openapi_document_describes_every_route(server):
    document = requests.get(server.url + "/openapi.json", timeout=30).json()
    schemas = document["components"]["schemas"]
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert documented == ROUTES
    for path, method in ROUTES:
        operation = document["paths"][path][method]
        assert "200" in operation["responses"] and "422" not in operation["responses"]  # 422 is never sent
        if method == "post":
            body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert operation["requestBody"]["required"] and body.split("/")[-1] in schemas
            assert {"400", "401", "404", "413", "429", "503"} <= set(operation["responses"])
            error = operation["responses"]["413"]["content"]["application/json"]["schema"]["$ref"]
            assert error == "#/components/schemas/ErrorBody"
    completion = schemas["CompletionRequest"]
    assert completion["required"] == ["prompt"] and completion["properties"]["n"]["maximum"] == 64
    assert completion["properties"]["seed"]["anyOf"][0] == {
        "type": "integer",
        "minimum": -(2**63),
        "maximum": 2**64 - 1,
    }
    stop = completion["properties"]["stop"]["anyOf"]
    assert stop[0] == {"type": "string", "minLength": 1} and stop[1]["maxItems"] == 16
    assert schemas["ChatCompletionRequest"]["properties"]["template"]["anyOf"][0] == {
        "enum": ["plain", "multialpaca", "chat"]
    }
    assert schemas["ErrorDetail"]["required"] == ["message", "type", "param", "code"]
    for path in ("/v1/completions", "/v1/chat/completions"):
        content = document["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}
        assert content["text/event-stream"]["itemSchema"]["required"] == ["data"]
    assert "securitySchemes" not in document["components"]  # this server has no API key


def test_openapi_document_names_the_bearer_scheme_when_a_key_is_set(tmp_path):
    app = create_app(ServeSettings(model=str(tmp_path), api_key="k"))
    document = app.openapi()
    assert document["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    secured = {path for path, operations in document["paths"].items() for op in operations.values() if "security" in op}
    assert secured == {
        "/v1/completions",
        "/v1/chat/completions",
        "/tokenize",
        "/detokenize",
        "/tokenizer_info",
        "/v1/models",
    }


def test_stream_events_are_checked_against_the_document(server):
    """The checks read each server-sent event: a document that misnames the chunks' `object` fails them."""
    body = {"prompt": "The river", "max_tokens": 3, "stream": True}
    assert stream_events(server.url, "/v1/completions", body)[-1] == "[DONE]"
    document = requests.get(server.url + "/openapi.json", timeout=30).json()
    operation = schemathesis.openapi.from_dict(document)["/v1/completions"]["POST"]
    case = operation.Case(body=body, media_type="application/json")
    case.validate_response(case.call(base_url=server.url, timeout=60), checks=checks())
    document["components"]["schemas"]["CompletionChunk"]["properties"]["object"] = {"const": "completion"}
    operation = schemathesis.openapi.from_dict(document)["/v1/completions"]["POST"]
    case = operation.Case(body=body, media_type="application/json")
    with pytest.raises(FailureGroup, match="SSE event violates schema"):
        case.validate_response(case.call(base_url=server.url, timeout=60), checks=checks())
