"""Reading the YAML config files (data prepare, instruct prepare, pretrain) into typed dataclasses, and the JSON
summaries polylm commands write, with one-line errors that name the file and the key at fault.

Every reader goes through `build` (a fresh section from a mapping) or `merge` (a mapping written over values
already set, as pretraining layers preset < file < overrides). Both reject unknown keys and give each value its
field's declared type, so a typo or a wrong type is reported before any work starts. `config_keys` lists a
tree's keys with their docstrings (the string under each field), which `--help` shows.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import sys
import textwrap
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import yaml

from polylm.errors import PolyLMError


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string literal right after its annotation); a subclass's
    own docstring wins over its base's."""
    docs = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in itertools.pairwise(body):
            is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and is_doc:
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def config_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, str, object, str]]:
    """Every leaf of a config tree, sections walked in: (dotted key, type, default, docstring)."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from config_keys(hints[f.name], f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        yield f"{prefix}{f.name}", str(f.type), default, docs.get(f.name, "")


def read_yaml(path: Path) -> object:
    """The parsed document of `path` (None when it is empty)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolyLMError(f"{path}: config file not found") from None
    except OSError as exc:  # a directory, no permission
        raise PolyLMError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise PolyLMError(f"{path}:{line}: not valid UTF-8") from None
    except yaml.YAMLError as exc:
        raise PolyLMError(f"{path}: not valid YAML ({_first_line(exc)})") from None
    except (ValueError, RecursionError) as exc:  # 2001-02-30, an integer of over 4300 digits; nesting too deep
        raise PolyLMError(f"{path}: not valid YAML ({_first_line(exc) or 'nested too deeply'})") from None


def read_json(path: Path, written_by: str | None = None) -> object:
    """A JSON file (a model's config.json, or a summary a polylm command wrote: `written_by`, e.g. `polylm data
    prepare`, which the not-found error then names)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if written_by is None:
            raise PolyLMError(f"{path}: file not found") from None
        raise PolyLMError(f"{path}: not found; is {path.parent} a directory written by `{written_by}`?") from None
    except OSError as exc:
        raise PolyLMError(f"{path}: cannot read the file ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, an integer too long, nesting too deep
        raise PolyLMError(f"{path}: not valid JSON ({_first_line(exc) or 'nested too deeply'})") from None


def _first_line(exc: Exception) -> str:
    """The first line of an error's message: the CLI prints a PolyLMError as one line."""
    return next(iter(str(exc).splitlines()), "")


def check_mapping(cls: type, values: object, where: str, key: str = "", require: bool = True) -> dict:
    """`values` as a mapping of dataclass `cls`'s fields: no unknown keys and, with `require`, no missing ones."""
    if not isinstance(values, dict):
        raise PolyLMError(f"{_at(where, key)}: expected a mapping, got {_short(values)}")
    fields = dataclasses.fields(cls)
    known = [f.name for f in fields]
    unknown = [name for name in values if name not in known]
    if unknown:
        name = unknown[0] if isinstance(unknown[0], str) and unknown[0].isprintable() else repr(unknown[0])
        raise PolyLMError(f"{_at(where, _join(key, name[:80]))}: unknown key (known: {', '.join(known)})")
    missing = [f.name for f in fields if require and f.name not in values and _default(f) is dataclasses.MISSING]
    if missing:
        raise PolyLMError(f"{_at(where, _join(key, missing[0]))}: missing key")
    return dict(values)


def build(cls: type, values: object, where: str, key: str = ""):
    """A new `cls` from a YAML mapping (None: all defaults). Sections, optional sections and lists of sections
    (fields annotated with a dataclass of the same module) are built the same way, so every key at every depth is
    checked. `where` names the file, `key` the dotted path of this section in it; errors name both."""
    values = check_mapping(cls, {} if values is None else values, where, key)
    kwargs = {f.name: _value(cls, f, values[f.name], where, _join(key, f.name)) for f in dataclasses.fields(cls)
              if f.name in values}  # fmt: skip
    return cls(**kwargs)


def merge(target: object, values: object, where: str, key: str = "") -> None:
    """Write a YAML mapping into dataclass `target` in place, recursing into sections; unset keys keep their value."""
    values = check_mapping(type(target), values, where, key, require=False)
    fields = {f.name: f for f in dataclasses.fields(target)}
    for name, value in values.items():
        current = getattr(target, name)
        if dataclasses.is_dataclass(current) and value is not None:
            merge(current, value, where, _join(key, name))
        else:
            setattr(target, name, _value(type(target), fields[name], value, where, _join(key, name)))


def _value(cls: type, f: dataclasses.Field, value: object, where: str, key: str) -> object:
    """One field's value: a section built from its mapping, a list of sections, or a typed plain value."""
    annotation = str(f.type)
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None and "None" in kinds:
        return None
    if annotation.startswith("list[") and (item := _section(cls, annotation[len("list[") : -1])) is not None:
        if not isinstance(value, list):
            raise PolyLMError(f"{_at(where, key)}: expected a list, got {_short(value)}")
        return [build(item, element, where, f"{key}[{number}]") for number, element in enumerate(value)]
    sections = [section for kind in kinds if (section := _section(cls, kind)) is not None]
    if sections:
        return build(sections[0], value, where, key)
    return typed(value, annotation, _at(where, key))


def _section(cls: type, name: str) -> type | None:
    """The dataclass called `name` in the module that defines `cls` (annotations are strings there), if any."""
    found = vars(sys.modules[cls.__module__]).get(name)
    return found if isinstance(found, type) and dataclasses.is_dataclass(found) else None


def typed(value: object, annotation: str, where: str) -> object:
    """`value` as a field annotated `annotation` (a string: every config module uses postponed annotations).

    YAML reads `1e-4` (no dot) as a string, so floats are parsed here; ints, bools and strings must already be.
    Mappings (`dict`) and lists must be, and a `list[str]` or `list[dict]` holds only those; a `tuple[float, ...]`
    takes a list of exactly as many numbers. Other annotations (sections built by their loader) pass as they are.
    """
    kinds = {part.strip() for part in annotation.split("|")}
    if value is None and "None" in kinds:
        return None
    if "float" in kinds:
        try:  # not a bool: float(True) is 1.0, for what is a typo; OverflowError: an integer past the largest float
            number = None if isinstance(value, bool) else float(value)
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is None:
            raise PolyLMError(f"{where}: expected a number, got {_short(value)}")
        return number
    for name, kind in (("int", int), ("bool", bool), ("str", str), ("dict", dict)):
        if name in kinds and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise PolyLMError(f"{where}: expected {'a mapping' if kind is dict else name}, got {_short(value)}")
    if annotation.startswith("tuple[float"):
        size = None if "..." in annotation else annotation.count(",") + 1
        if not isinstance(value, (list, tuple)) or (size is not None and len(value) != size):
            what = f"a list of {size} numbers" if size is not None else "a list of numbers"
            raise PolyLMError(f"{where}: expected {what}, got {_short(value)}")
        return tuple(typed(item, "float", f"{where}[{number}]") for number, item in enumerate(value))
    if annotation.startswith("dict[str, float]"):
        if not isinstance(value, dict):
            raise PolyLMError(f"{where}: expected a mapping, got {_short(value)}")
        return {str(name): typed(number, "float", f"{where}.{name}") for name, number in value.items()}
    if annotation.startswith("list["):
        if not isinstance(value, list):
            raise PolyLMError(f"{where}: expected a list, got {_short(value)}")
        item = annotation[len("list[") : -1]
        if item in ("str", "dict"):
            for number, element in enumerate(value):
                typed(element, item, f"{where}[{number}]")
    return value


def _short(value: object, limit: int = 200) -> str:
    """`repr(value)`, cut to `limit` characters: an error message names the value, it need not hold a whole file."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _at(where: str, key: str) -> str:
    return f"{where}: {key}" if key else where


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _default(f: dataclasses.Field) -> object:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default
