"""Turn a `--model` argument into a local directory: a path as is, or a Hugging Face hub id fetched into the HF cache.

Downloads go through `huggingface_hub.snapshot_download`, so HF_ENDPOINT, HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE and
HF_TOKEN mean what they mean everywhere else, and a model fetched once keeps loading offline from the cache.
"""

from __future__ import annotations

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


def resolve_model_dir(model: str | Path, revision: str | None = None) -> Path:
    """Return a local model directory for `model`, downloading it from the hub when it is a repo id.

    An existing directory wins over a repo id of the same spelling and makes no request (`revision` is then
    ignored). Every failure is a PolyLMError of one line naming `model`.
    """
    path = Path(model)
    if path.is_dir():
        return path
    if path.exists():
        raise PolyLMError(f"{model}: is a file, not a model directory")
    if not REPO_ID.fullmatch(str(model)):
        raise PolyLMError(f"{model}: model directory not found")
    return _download(str(model), revision)


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
