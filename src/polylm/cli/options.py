"""Command-line flags declared once: each field of a config dataclass becomes `--field-name`, typed from its
annotation, with the field's docstring as its help. A new field is one edit in its dataclass (litgpt builds its
CLI the same way, from typed signatures and docstrings).

Flags left out of the command line keep the dataclass default (or the `defaults` a command passes), so
`values(args, cls)` returns only what the user set, ready for `dataclasses.replace` or the constructor.
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap

from polylm.configfile import config_keys, field_docs

_UNSET = object()


def config_keys_help(cls: type, width: int = 100) -> str:
    """An epilog listing the keys of a config file, for the commands that read one and take `dotted.key=value`."""
    lines = ["config keys (in the YAML file, or dotted.key=value; defaults before the preset's):"]
    for key, kind, default, doc in config_keys(cls):
        lines.append(f"  {key}: {kind} = {default!r}")
        lines += textwrap.wrap(doc, width, initial_indent="      ", subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines)


CONFIG_KEYS = "(the config's keys)"
"""The epilog `ConfigKeysFormatter` replaces with `config_keys_help`."""


class ConfigKeysFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that ends with the keys of `config`, built only when --help is shown: reading the field docstrings
    takes tens of milliseconds, which every other command would pay at start-up."""

    def __init__(self, prog: str, config: type, **kwargs) -> None:
        super().__init__(prog, **kwargs)
        self.config = config

    def add_text(self, text: str | None) -> None:
        super().add_text(config_keys_help(self.config) if text == CONFIG_KEYS else text)


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
