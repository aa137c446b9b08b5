"""Package names that load their module on first use, so that light callers (the CLI building its parser from
config dataclasses) do not import torch through a package's `__init__`."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def exports(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package` that imports each name from its home module when first asked."""

    def __getattr__(name: str) -> object:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__
