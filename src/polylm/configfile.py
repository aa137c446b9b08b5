"""Reading the YAML config files (data prepare, pretrain) with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import yaml

from polylm.errors import PolyLMError


def read_yaml(path: Path) -> object:
    """The parsed document of `path` (None when it is empty)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolyLMError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise PolyLMError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
