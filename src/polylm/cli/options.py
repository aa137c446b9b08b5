"""Command-line flags declared once: each field of a config dataclass becomes `--field-name`, typed from its
annotation, with the field's docstring as its help. A new field is one edit in its dataclass (litgpt builds its
CLI the same way, from typed signatures and docstrings).

Flags left out of the command line keep the dataclass default (or the `defaults` a command passes), so
`values(args, cls)` returns only what the user set, ready for `dataclasses.replace` or the constructor.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap
from functools import cache

_UNSET = object()


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal right after its annotation)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in itertools.pairwise(body):
        is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def _shown(default: object) -> str:
    return str(default).lower() if isinstance(default, bool) else str(default)


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _true_false_or_text(text: str) -> bool | str:
    return {"true": True, "false": False}.get(text.lower(), text)


def add_fields(
    parser: argparse._ActionsContainer,
    cls: type,
    defaults: dict | None = None,
    required: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
) -> None:
    """`--name` for every field of `cls` (and the field's metadata `aliases`) but `skip` (nested sections);
    `defaults` replaces a field's default for this command; `required` fields must be given (as must those
    without a default)."""
    defaults = defaults or {}
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else _UNSET)
        if default is _UNSET and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        shown = "" if default in (None, [], _UNSET) or f.name in required else f" (default: {_shown(default)})"
        options: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": docs.get(f.name, "") + shown}
        if default is _UNSET or f.name in required:
            options["required"] = True
        if "choices" in f.metadata:
            options["choices"] = f.metadata["choices"]
        kinds = [part.strip() for part in str(f.type).split("|")]
        if f.metadata.get("comma_separated"):  # `--tasks xnli,xcopa`
            options.update(type=_comma_list, metavar="A,B")
        elif kinds == ["bool"]:
            options["action"] = argparse.BooleanOptionalAction
        elif "list[int]" in kinds:  # `--eos-token-id 2 3`; no value: none
            options.update(type=int, nargs="*", metavar="ID")
        elif kinds[0].startswith("list["):
            options.update(action="append", metavar="TEXT")
            options["help"] += " (repeatable)"
        elif kinds[:2] == ["bool", "str"]:
            options.update(type=_true_false_or_text, metavar="true|false|TEXT")
        else:
            options["type"] = {"int": int, "float": float, "str": str}[kinds[0]]
        parser.add_argument(*flags, **options)


def values(args: argparse.Namespace, cls: type, defaults: dict | None = None) -> dict:
    """The fields of `cls` as the command sets them: the user's flags over the command's `defaults`."""
    found = {**(defaults or {})}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            if isinstance(value, list) and "list[int]" in str(f.type):
                value = None if not value else value[0] if len(value) == 1 else value
            found[f.name] = value
    return found
