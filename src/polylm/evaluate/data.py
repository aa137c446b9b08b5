"""Reading benchmark files: missing files name the expected path, bad rows are named (FILE:LINE) and counted.

A malformed row is never dropped silently: every one is recorded, and the run fails after loading (listing
them) unless the user passed --skip-bad-rows, in which case the count goes into the output JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from polylm.errors import PolyLMError


@dataclass
class BadRows:
    """Malformed rows of one task and language: `FILE:LINE` -> the first thing found wrong with it."""

    rows: dict[str, str] = field(default_factory=dict)

    def add(self, path: Path, line: int | str, why: str) -> None:
        """`line`: a line number, or for a JSON document the item's place in it."""
        self.rows.setdefault(f"{path}:{line}", why)

    def __len__(self) -> int:
        return len(self.rows)

    def messages(self) -> list[str]:
        return [f"{where}: {why}" for where, why in self.rows.items()]


def require(path: Path, what: str) -> Path:
    """`path` if it exists, else a PolyLMError naming the file the layout expects there."""
    if not path.is_file():
        raise PolyLMError(f"{path}: {what} not found (see docs/evaluation.md for the data-dir layout)")
    return path


def first_existing(candidates: list[Path], what: str) -> Path:
    """The first of `candidates` that exists; the error names all of them."""
    for path in candidates:
        if path.is_file():
            return path
    expected = " or ".join(str(p) for p in candidates)
    raise PolyLMError(f"{expected}: {what} not found (see docs/evaluation.md for the data-dir layout)")


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PolyLMError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def read_lines(path: Path) -> list[str]:
    """Lines without their line ends (`\\n` or `\\r\\n` only: U+2028 and friends stay inside a line, as in WMT)."""
    text = read_text(path)
    lines = text.removesuffix("\n").split("\n") if text else []
    return [line.removesuffix("\r") for line in lines]


def read_jsonl(path: Path, bad: BadRows) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; lines that are not a JSON object go to `bad`."""
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.add(path, number, f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            bad.add(path, number, f"expected a JSON object, found {type(record).__name__}")
            continue
        yield number, record


def read_json(path: Path) -> object:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise PolyLMError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_tsv(path: Path, columns: int, bad: BadRows) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a tab-separated file without quoting; rows with too few fields go to `bad`."""
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < columns:
            bad.add(path, number, f"expected {columns} tab-separated fields, found {len(fields)}")
            continue
        yield number, fields


def read_tsv_records(path: Path, required: tuple[str, ...], bad: BadRows) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) of a tab-separated file whose first line names the columns."""
    lines = read_lines(path)
    header = lines[0].split("\t") if lines else []
    missing = [name for name in required if name not in header]
    if missing:
        raise PolyLMError(f"{path}: the header line has no column {', '.join(map(repr, missing))}")
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            bad.add(path, number, f"expected {len(header)} tab-separated fields, found {len(fields)}")
            continue
        yield number, dict(zip(header, fields, strict=True))


def field_str(record: dict, key: str, path: Path, line: int, bad: BadRows, allow_empty: bool = False) -> str | None:
    """record[key] as a string, or None after recording why the row is bad."""
    value = record.get(key)
    if not isinstance(value, str):
        bad.add(path, line, f"field {key!r} is {'missing' if value is None else type(value).__name__}, not a string")
        return None
    if not allow_empty and not value.strip():
        bad.add(path, line, f"field {key!r} is empty")
        return None
    return value
