"""resolve_model_dir against a local stand-in for the hub's file API, so the real snapshot_download code runs.

The stand-in answers the requests huggingface_hub makes for a snapshot: `GET /api/models/{id}/revision/{rev}`
(commit sha), `GET /api/models/{id}/tree/{sha}` (file listing), then `HEAD` + `GET /{id}/resolve/{sha}/{file}`
(X-Repo-Commit, ETag, Content-Length, then the bytes); errors carry X-Error-Code like the hub's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from huggingface_hub import constants

from polylm.errors import PolyLMError
from polylm.hub import resolve_model_dir

TINY = {
    "config.json": b'{"model_type": "gpt2"}',
    "model.safetensors": b"safetensors weights \x00\x01\x02",
    "tokenizer.model": b"sentencepiece \xff\xfe",
    "README.md": b"# not needed",
    "flax_model.msgpack": b"flax weights",
    "onnx/model.safetensors": b"onnx export",
}
BOTH = {
    "config.json": b"{}",
    "model.safetensors": b"st",
    "pytorch_model.bin": b"pickle",
    "tokenizer.model": b"spm",
}
BIN_ONLY = {
    "config.json": b"{}",
    "pytorch_model.bin": b"pickle weights",
    "tokenizer.model": b"spm",
    "README.md": b"# not needed",
}
REPOS = {"acme/tiny": TINY, "acme/both": BOTH, "acme/bin-only": BIN_ONLY}
REVISION = re.compile(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)")
TREE = re.compile(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)")
RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")


def commit_of(repo_id: str) -> str:
    return hashlib.sha1(repo_id.encode()).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    """The few hub endpoints snapshot_download uses, for the repos in REPOS (branch `main` only)."""

    server: StandInHub

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append((self.command, path))
        match = REVISION.fullmatch(path) or TREE.fullmatch(path) or RESOLVE.fullmatch(path)
        if match is None or match[1] not in REPOS:
            return self._send(404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, body)
        repo_id, revision = match[1], match[2]
        files, commit = REPOS[repo_id], commit_of(repo_id)
        if revision not in ("main", commit):
            return self._send(404, b"Revision not found", {"X-Error-Code": "RevisionNotFound"}, body)
        if match.re is REVISION:
            siblings = [{"rfilename": name} for name in files]
            return self._send_json({"id": repo_id, "sha": commit, "siblings": siblings}, body)
        if match.re is TREE:
            listing = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in files.items()
            ]
            return self._send_json(listing, body)
        if match[3] not in files:
            return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, body)
        data = files[match[3]]
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        self._send(200, data, {"X-Repo-Commit": commit, "ETag": etag}, body)

    def _send_json(self, payload: object, body: bool) -> None:
        self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, body)

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


class StandInHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.requests: list[tuple[str, str]] = []
        self.url = f"http://127.0.0.1:{self.server_port}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()
        self._stopped = False

    def stop(self) -> None:
        """Stop serving and free the port, so a request now gets 'connection refused' like an unreachable hub."""
        if not self._stopped:
            self._stopped = True
            self.shutdown()
            self.server_close()
            self._thread.join()

    def downloads(self) -> set[str]:
        """Files whose bytes were requested (GET on /resolve/)."""
        return {match[3] for method, path in self.requests if method == "GET" and (match := RESOLVE.fullmatch(path))}


def use_env(monkeypatch: pytest.MonkeyPatch, **env: str | None) -> None:
    """Set (or unset, with None) environment variables and re-derive huggingface_hub.constants from them.

    huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE... once, at import; re-running constants.py on a
    scratch module gives exactly what a fresh import would see, and monkeypatch restores the old values afterwards.
    """
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("_fresh_hf_constants", constants.__file__)
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    for name, value in vars(fresh).items():
        if name.isupper() and getattr(constants, name, None) != value:
            monkeypatch.setattr(constants, name, value)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandInHub]:
    """A running stand-in hub, with HF_ENDPOINT pointing at it and the HF cache in a temporary HF_HOME."""
    server = StandInHub()
    use_env(
        monkeypatch,
        HF_ENDPOINT=server.url,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_CACHE=str(tmp_path / "hf-home" / "hub"),
        HF_HUB_OFFLINE=None,
        TRANSFORMERS_OFFLINE=None,
        HF_TOKEN=None,
        HUGGING_FACE_HUB_TOKEN=None,
        HF_HUB_DISABLE_XET="1",
    )
    yield server
    server.stop()


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_hub_id_downloads_only_the_files_polylm_reads_into_the_cache(hub: StandInHub) -> None:
    folder = resolve_model_dir("acme/tiny")

    assert folder.is_relative_to(constants.HF_HUB_CACHE)
    assert folder.name == commit_of("acme/tiny")
    wanted = ("config.json", "model.safetensors", "tokenizer.model")
    assert files_in(folder) == {name: TINY[name] for name in wanted}
    assert hub.downloads() == set(wanted)
    assert not any(name in path for _, path in hub.requests for name in ("README", "flax", "onnx"))


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE=1", "server stopped"])
def test_second_call_offline_returns_the_cached_snapshot(
    hub: StandInHub, monkeypatch: pytest.MonkeyPatch, offline: str
) -> None:
    first = resolve_model_dir("acme/tiny")
    hub.requests.clear()
    if offline == "server stopped":
        hub.stop()
    else:
        use_env(monkeypatch, HF_HUB_OFFLINE="1")

    assert resolve_model_dir("acme/tiny") == first
    assert hub.requests == []


@pytest.mark.parametrize(("offline", "reason"), [("HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE is set"), ("stopped", "reach")])
def test_offline_without_a_cached_copy_is_one_line_error(
    hub: StandInHub, monkeypatch: pytest.MonkeyPatch, offline: str, reason: str
) -> None:
    if offline == "stopped":
        hub.stop()
    else:
        use_env(monkeypatch, HF_HUB_OFFLINE="1")

    with pytest.raises(PolyLMError, match="not in the local cache and the hub is unreachable") as error:
        resolve_model_dir("acme/tiny")
    assert str(error.value).startswith("acme/tiny: ")
    assert reason in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_repo_names_the_id(hub: StandInHub) -> None:
    with pytest.raises(PolyLMError, match=r"^acme/nope: not a local directory and not found on the hub") as error:
        resolve_model_dir("acme/nope")
    assert hub.url in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_revision_names_id_and_revision(hub: StandInHub) -> None:
    with pytest.raises(PolyLMError, match=r"^acme/tiny: revision 'v9' not found on the hub$"):
        resolve_model_dir("acme/tiny", revision="v9")


def test_safetensors_preferred_over_bin(hub: StandInHub) -> None:
    folder = resolve_model_dir("acme/both")

    assert set(files_in(folder)) == {"config.json", "model.safetensors", "tokenizer.model"}
    assert not any("pytorch_model" in path for _, path in hub.requests)


def test_bin_weights_fetched_when_no_safetensors_and_load_offline(
    hub: StandInHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = resolve_model_dir("acme/bin-only")

    wanted = ("config.json", "pytorch_model.bin", "tokenizer.model")
    assert files_in(folder) == {name: BIN_ONLY[name] for name in wanted}
    # The .bin pass is pinned to the commit the first pass resolved: one revision lookup, one listing.
    assert sum(1 for _, path in hub.requests if REVISION.fullmatch(path) or TREE.fullmatch(path)) == 2
    hub.requests.clear()
    use_env(monkeypatch, HF_HUB_OFFLINE="1")
    assert resolve_model_dir("acme/bin-only") == folder
    assert hub.requests == []


def test_local_directory_is_returned_without_requests(
    hub: StandInHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_model_dir(tmp_path) == tmp_path
    assert resolve_model_dir(str(tmp_path)) == tmp_path
    # An existing directory wins over the hub id it could also be read as.
    (tmp_path / "acme" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir("acme/tiny") == Path("acme/tiny")
    assert hub.requests == []


@pytest.mark.parametrize("missing", ["/no/such/model", "./nope", "nope", "a/b/c", ".hidden/model"])
def test_missing_path_that_is_no_repo_id(hub: StandInHub, missing: str) -> None:
    with pytest.raises(PolyLMError, match=f"^{re.escape(missing)}: model directory not found$"):
        resolve_model_dir(missing)
    assert hub.requests == []


def test_existing_file_is_not_a_model_directory(hub: StandInHub, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PolyLMError, match="is a file, not a model directory"):
        resolve_model_dir(tmp_path / "config.json")
