"""ModelScope ids (`modelscope://damo/...`, POLYLM_HUB=modelscope) through the real `modelscope` snapshot_download,
against a local stand-in of ModelScope's file API: the model card's repo layout loads, with a revision, only the
files polylm reads are fetched, the second call works offline, unknown repos and revisions are one line."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import TINY, random_model
from polylm import pipeline
from polylm.cli import main
from polylm.hf_checkpoint import save_model
from polylm.hub import resolve_model_dir

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("modelscope") is None, reason="the modelscope package (setup.sh --dev) is not installed"
)
# Read by modelscope when first imported (polylm imports it lazily, at the first ModelScope id): one attempt per
# listing, so the offline cases do not wait through its back-off.
os.environ.setdefault("MODELSCOPE_REPO_TREE_PAGE_MAX_ATTEMPTS", "1")
REPO, REVISION = "damo/nlp_polylm_test_text_generation", "v1.0.0"
EXTRA = {  # what a ModelScope PolyLM repo also holds, that polylm must not fetch
    "README.md": b"# PolyLM",
    "pytorch_model.bin": b"older pickle weights",
    "onnx/model.safetensors": b"an export in a subfolder",
}


class ModelScopeHandler(BaseHTTPRequestHandler):
    """`GET /api/v1/models/{owner}/{name}/repo/files?Revision=R` (listing) and `.../repo?Revision=R&FilePath=F`."""

    server: StandInModelScope

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        self.server.requests.append(self.path)
        parts = url.path.removeprefix("/api/v1/models/").split("/")
        repo, action = "/".join(parts[:2]), "/".join(parts[2:])
        files = self.server.repos.get(repo, {}).get(query.get("Revision", "master"))
        if files is None:
            return self._json(404, {"Code": 10010205001, "Message": f"{repo} revision not found", "Success": False})
        if action == "repo/files":
            listing = [{"Name": Path(name).name, "Path": name, "Type": "blob", "Size": len(data),
                        "Sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()]  # fmt: skip
            return self._json(200, {"Code": 200, "Data": {"Files": listing}, "Success": True})
        if action == "repo" and query.get("FilePath") in files:
            data = files[query["FilePath"]]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        return self._json(404, {"Code": 10010205001, "Message": "file not found", "Success": False})

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class StandInModelScope(ThreadingHTTPServer):
    def __init__(self, repos: dict) -> None:
        super().__init__(("127.0.0.1", 0), ModelScopeHandler)
        self.repos, self.requests = repos, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory, corpus_tokenizer) -> dict[str, bytes]:
    """A tiny model in ModelScope's PolyLM layout: the Hugging Face files plus `configuration.json`."""
    folder = tmp_path_factory.mktemp("ms-model")
    save_model(random_model(TINY.replace(vocab_size=corpus_tokenizer.vocab_size), seed=4), folder, corpus_tokenizer)
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    files["configuration.json"] = json.dumps({"framework": "pytorch", "task": "text-generation"}).encode()
    return {**files, **EXTRA}


@pytest.fixture
def modelscope(repo_files, tmp_path, monkeypatch):
    server = StandInModelScope({REPO: {REVISION: repo_files}})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope-cache"))
    yield server
    server.shutdown()


def test_card_repo_with_revision_loads_only_what_polylm_reads(modelscope, repo_files, tmp_path):
    folder = resolve_model_dir(f"modelscope://{REPO}@{REVISION}")
    assert folder.is_relative_to(tmp_path / "modelscope-cache")  # ModelScope's own cache
    fetched = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert fetched == sorted(name for name in repo_files if name not in EXTRA)
    model_requests = [r for r in modelscope.requests if r.startswith("/api/v1/models/")]
    assert model_requests and all(f"Revision={REVISION}" in request for request in model_requests)
    p = pipeline("text-generation", model=f"modelscope://{REPO}", revision=REVISION)
    assert p("Beijing is the capital of China.", max_new_tokens=4)["text"].startswith("Beijing")


def test_second_call_is_offline(modelscope):
    first = resolve_model_dir(f"modelscope://{REPO}", revision=REVISION)
    modelscope.shutdown()
    modelscope.server_close()
    count = len(modelscope.requests)
    assert resolve_model_dir(f"modelscope://{REPO}", revision=REVISION) == first
    assert len(modelscope.requests) == count
    argv = ["generate", "--model", f"modelscope://{REPO}@{REVISION}", "--prompt", "Hallo", "--max-new-tokens", "3"]
    assert main(argv) == 0


def test_polylm_hub_env_makes_bare_ids_modelscope(modelscope, monkeypatch):
    monkeypatch.setenv("POLYLM_HUB", "modelscope")
    assert (resolve_model_dir(REPO, revision=REVISION) / "configuration.json").is_file()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (f"modelscope://damo/unknown@{REVISION}", "revision 'v1.0.0' not found on ModelScope"),
        (f"modelscope://{REPO}@v9.9.9", "revision 'v9.9.9' not found on ModelScope"),
        ("modelscope://damo/unknown", "the repo not found on ModelScope"),
    ],
)
def test_unknown_repo_or_revision_is_one_line(modelscope, capsys, model, message):
    assert main(["generate", "--model", model, "--prompt", "x", "--max-new-tokens", "1"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1] and model.split("@")[0] in error[-1], error
    assert sum(line.startswith("polylm: error:") for line in error) == 1


def test_unreachable_without_cache_is_one_line(modelscope, capsys):
    modelscope.shutdown()
    modelscope.server_close()
    assert main(["generate", "--model", f"modelscope://{REPO}", "--prompt", "x", "--max-new-tokens", "1"]) == 1
    assert "not in the local cache and ModelScope is unreachable" in capsys.readouterr().err
