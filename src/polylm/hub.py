"""Turn a `--model` argument into a local directory: a path as is, or a hub id fetched into that hub's cache.

Which hub: `modelscope://OWNER/NAME` is a ModelScope id (the model card's `damo/...` repos); a bare `OWNER/NAME`
is a Hugging Face id, unless POLYLM_HUB=modelscope says otherwise. A revision may follow the id after `@`
(`modelscope://damo/nlp_polylm_13b_text_generation@v1.0.0`), or be passed as `revision`. An existing local
directory always wins and makes no request.

Hugging Face downloads go through `huggingface_hub.snapshot_download`, so HF_ENDPOINT, HF_HOME / HF_HUB_CACHE,
HF_HUB_OFFLINE and HF_TOKEN mean what they mean everywhere else; ModelScope downloads through the `modelscope`
library's `snapshot_download` (MODELSCOPE_ENDPOINT, MODELSCOPE_CACHE). Both fetch only the files polylm reads, and
a model fetched once keeps loading offline from the cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from polylm.errors import PolyLMError

# `owner/name`; neither part starts with a dot, so `./x/y` or `../y` is always meant as a path.
REPO_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*/[A-Za-z0-9_-][A-Za-z0-9_.-]*")
# What polylm reads from a model directory; weights come in a second pass (see `_download`).
MODEL_FILES = [
    "config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
SAFETENSORS_WEIGHTS = ["*.safetensors", "*.safetensors.index.json"]
PICKLE_WEIGHTS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
# polylm only reads the top level; this keeps e.g. `onnx/model.safetensors` or `original/*.bin` out.
SUBFOLDERS = ["*/*"]


MODELSCOPE_PREFIX = "modelscope://"
HUBS = ("huggingface", "modelscope")
MODELSCOPE_FILES = ["configuration.json"]
"""ModelScope's PolyLM repos hold an HF-format model plus this file (its pipeline's settings)."""


def resolve_model_dir(model: str | Path, revision: str | None = None, hub: str | None = None) -> Path:
    """Return a local model directory for `model`, downloading it from a hub when it is a repo id.

    An existing directory wins over a repo id of the same spelling and makes no request (`revision` is then
    ignored). `hub`: huggingface or modelscope (default: the `modelscope://` prefix, else POLYLM_HUB, else
    huggingface). Every failure is a PolyLMError of one line naming `model`.
    """
    text = str(model)
    if text.startswith(MODELSCOPE_PREFIX):
        text, hub = text.removeprefix(MODELSCOPE_PREFIX), "modelscope"
    path = Path(text)
    if path.is_dir():
        return path
    if path.exists():
        raise PolyLMError(f"{model}: is a file, not a model directory")
    repo_id, _, pinned = text.partition("@")
    if not REPO_ID.fullmatch(repo_id) or (pinned == "" and "@" in text):
        raise PolyLMError(f"{model}: model directory not found")
    hub = hub or os.environ.get("POLYLM_HUB") or "huggingface"
    if hub not in HUBS:
        raise PolyLMError(f"hub {hub!r} (POLYLM_HUB) is not one of {', '.join(HUBS)}")
    if hub == "modelscope":
        return _download_modelscope(repo_id, revision or pinned or None)
    return _download(repo_id, revision or pinned or None)


def _download(repo_id: str, revision: str | None) -> Path:
    """Fetch the files polylm reads, preferring safetensors, and map the hub's exceptions to one-line errors.

    Two passes instead of listing the repo first: the first fetches the model files and any safetensors weights;
    only if it found no safetensors does the second fetch the pickle (`.bin`) weights, pinned to the commit the
    first one resolved (the snapshot folder's name), so no second revision lookup is made and both passes see the
    same commit. The same two calls answer offline from the cache, with the same patterns, so a cached snapshot is
    judged complete exactly as it was downloaded. snapshot_download itself falls back to the cached snapshot when
    the hub cannot be reached (HF_HUB_OFFLINE, connection error, timeout, 5xx), so no retry is needed here.
    """
    try:
        folder = Path(
            snapshot_download(
                repo_id=repo_id,
                revision=revision,
                allow_patterns=MODEL_FILES + SAFETENSORS_WEIGHTS,
                ignore_patterns=SUBFOLDERS,
            )
        )
        if not any(folder.glob("*.safetensors")):
            folder = Path(
                snapshot_download(
                    repo_id=repo_id, revision=folder.name, allow_patterns=PICKLE_WEIGHTS, ignore_patterns=SUBFOLDERS
                )
            )
    except GatedRepoError:
        raise PolyLMError(f"{repo_id}: gated repo; accept its terms on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise PolyLMError(
            f"{repo_id}: not a local directory and not found on the hub ({constants.ENDPOINT}/{repo_id});"
            " a private repo needs HF_TOKEN"
        ) from None
    except RevisionNotFoundError:
        raise PolyLMError(f"{repo_id}: revision {revision!r} not found on the hub") from None
    except LocalEntryNotFoundError:
        reason = "offline: HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"cannot reach {constants.ENDPOINT}"
        raise PolyLMError(f"{repo_id}: not in the local cache and the hub is unreachable ({reason})") from None
    except HFValidationError:
        raise PolyLMError(f"{repo_id}: model directory not found") from None
    except Exception as err:
        # The rest comes from whichever HTTP, Xet or filesystem layer this huggingface_hub version uses (disk full,
        # connection dropped mid-file, HTTP 5xx, bad token): an environment problem, so one line, not a traceback.
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise PolyLMError(f"{repo_id}: download failed: {type(err).__name__}: {first_line}") from err
    if not (folder / "config.json").is_file():
        raise PolyLMError(f"{repo_id}: the hub repo has no config.json at the top level; not a model polylm can load")
    return folder


def _download_modelscope(repo_id: str, revision: str | None) -> Path:
    """The same two passes as `_download`, through ModelScope's own client; when ModelScope cannot be reached, the
    same calls again from its cache only (`local_files_only`), so a model fetched once loads offline."""
    try:
        from modelscope import snapshot_download as modelscope_download
    except ImportError:
        raise PolyLMError(
            f"modelscope://{repo_id}: ModelScope ids need the modelscope package (pip install 'polylm[modelscope]')"
        ) from None
    # Read here, at each call: the library reads its environment once, when first imported.
    endpoint = os.environ.get("MODELSCOPE_ENDPOINT") or "https://modelscope.cn"
    cache_dir = os.environ.get("MODELSCOPE_CACHE") or None

    def fetch(local_files_only: bool) -> Path:
        def files(patterns: list[str]) -> Path:
            return Path(
                modelscope_download(
                    repo_id,
                    revision=revision,
                    allow_patterns=patterns,
                    ignore_patterns=SUBFOLDERS,
                    local_files_only=local_files_only,
                    endpoint=endpoint,
                    cache_dir=cache_dir,
                )
            )

        folder = files(MODEL_FILES + MODELSCOPE_FILES + SAFETENSORS_WEIGHTS)
        return folder if any(folder.glob("*.safetensors")) else files(PICKLE_WEIGHTS)

    where = f"modelscope://{repo_id}" + (f"@{revision}" if revision else "")
    try:
        folder = fetch(local_files_only=False)
    except Exception as err:
        if _refused(err):
            what = f"revision {revision!r}" if revision else "the repo"
            raise PolyLMError(
                f"{where}: {what} not found on ModelScope ({endpoint}); a private repo needs MODELSCOPE_API_TOKEN"
            ) from None
        try:
            folder = fetch(local_files_only=True)
        except Exception:
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PolyLMError(
                f"{where}: not in the local cache and ModelScope is unreachable ({endpoint}: {first_line})"
            ) from None
    if not (folder / "config.json").is_file():
        raise PolyLMError(f"{where}: the repo has no config.json at the top level; not a model polylm can load")
    return folder


def _refused(err: BaseException | None) -> bool:
    """ModelScope answered that the repo or revision does not exist or is not ours to read (404/401/403).

    By class name and status along the cause chain: modelscope re-raises its hub client's NotExistError as a
    requests HTTPError, and the classes moved between releases."""
    while err is not None:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if type(err).__name__ in ("NotExistError", "AuthenticationError", "PermissionDeniedError") or status in (
            401,
            403,
            404,
        ):
            return True
        err = err.__cause__
    return False
