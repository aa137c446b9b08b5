"""Instruction files -> `Entry`s: JSON Lines or one JSON array (told apart by the first character), optionally
gzip-compressed (`.gz`, as the Open Assistant exports are), in one of the `formats.FORMATS`.

Every record comes out as an entry, so nothing is dropped silently: a line that is not UTF-8 or not a JSON
object, an array item that is not an object, a missing or mistyped field are malformed entries at `FILE:LINE`
(1-based) or `FILE[INDEX]` (0-based array index). A JSON array file that does not parse is one malformed entry
at the line where parsing failed (its records cannot be told apart) when it opens with `[` alone on its first
line, as an indented array does; otherwise it is read as JSON Lines whose first line is bad, so that the records
after that line are kept (a one-line array is then one malformed line). A file without any record, or a gzip
stream that is corrupt or cut (after the records read before it), is one at `FILE`. Blank lines (JSON
whitespace only) are not records. An integer of more than 4300 digits or nesting past Python's recursion limit
makes a line (or an array file) invalid JSON, like any other syntax error. JSON arrays are read whole into
memory (ShareGPT's 670 MB file takes a few GB); JSON Lines are streamed.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO

from polylm.errors import PolyLMError
from polylm.instruct.formats import FORMATS, Entry, Malformed, OpenAssistant, SingleRecord
from polylm.instruct.records import Conversation

JSON_BLANK = " \t\r\n"
"""JSON's whitespace: a line of nothing else is blank; `str.strip()` would also take `\\x0c` or `\\u3000`."""
_UNREADABLE = (ValueError, RecursionError)
"""What `json.loads` raises besides JSONDecodeError: an integer of over 4300 digits, nesting too deep."""


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")


def _is_array(path: Path) -> bool:
    """Whether the file's first non-blank character is `[` (else it is read as JSON Lines)."""
    with _open(path) as handle:
        while chunk := handle.read(4096):
            stripped = chunk.lstrip(b" \t\r\n\xef\xbb\xbf")
            if stripped:
                return stripped.startswith(b"[")
    return False


def _object(value: object) -> dict:
    if not isinstance(value, dict):
        raise Malformed(f"not a JSON object (got {type(value).__name__})")
    return value


def _json_lines(path: Path) -> Iterator[tuple[str, dict | Malformed]]:
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                yield where, Malformed("invalid UTF-8")
                continue
            if not line.strip(JSON_BLANK):
                continue
            try:
                yield where, _object(json.loads(line))
            except _UNREADABLE:
                yield where, Malformed("invalid JSON")
            except Malformed as exc:
                yield where, exc


def _json_array(path: Path) -> Iterator[tuple[str, dict | Malformed]]:
    with _open(path) as handle:
        raw = handle.read()
    try:
        items = json.loads(raw.decode("utf-8-sig"))
    except _UNREADABLE as exc:  # ValueError: UnicodeDecodeError and JSONDecodeError too
        if not _indented_array(raw):
            yield from _json_lines(path)  # JSON Lines whose first record starts with `[`: a bad line, not a bad file
        elif isinstance(exc, UnicodeDecodeError):
            line = raw[: exc.start].count(b"\n") + 1
            yield f"{path}:{line}", Malformed("invalid UTF-8")
        elif isinstance(exc, json.JSONDecodeError):
            yield f"{path}:{exc.lineno}", Malformed("invalid JSON")
        else:  # nested too deeply, or an integer too long: no line to name
            yield str(path), Malformed("invalid JSON")
        return
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        try:
            yield where, _object(item)
        except Malformed as exc:
            yield where, exc


def _indented_array(raw: bytes) -> bool:
    """Whether the first non-blank line of a file is `[` alone."""
    return raw.lstrip(b" \t\r\n\xef\xbb\xbf").split(b"\n", 1)[0].strip() == b"["


def read_entries(path: Path, fmt: str, source: str) -> Iterator[Entry]:
    """The entries of one file in format `fmt`, their conversations tagged with `source`."""
    if fmt not in FORMATS:
        raise PolyLMError(f"unknown instruction format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise PolyLMError(f"{path}: file not found")
    reader = FORMATS[fmt]()
    count = 0
    try:
        records = _json_array(path) if _is_array(path) else _json_lines(path)
        for entry in _entries(records, reader):
            count += 1
            yield _tagged(entry, source)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        count += 1
        yield Entry(str(path), malformed="corrupt or truncated gzip stream (the rest of the file is lost)")
    if count == 0:
        yield Entry(str(path), malformed="no records in the file")


def _entries(records: Iterator[tuple[str, dict | Malformed]], reader: SingleRecord | OpenAssistant) -> Iterator[Entry]:
    for where, record in records:
        if isinstance(record, Malformed):
            yield Entry(where, malformed=str(record))
        else:
            yield from reader.record(record, where)
    yield from reader.end()


def _tagged(entry: Entry, source: str) -> Entry:
    if entry.conversation is None:
        return entry
    return replace(entry, conversation=replace(entry.conversation, source=source))


def read_conversations(path: Path) -> Iterator[Conversation]:
    """Conversations from a JSON Lines file of `Conversation.to_dict()` (what `polylm instruct prepare` writes);
    any other line raises PolyLMError naming it."""
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip(JSON_BLANK.encode()):
                try:
                    yield Conversation.from_dict(json.loads(raw.decode("utf-8")))
                except (*_UNREADABLE, KeyError, TypeError) as exc:  # ValueError: not UTF-8 or not JSON too
                    raise PolyLMError(f"{path}:{number}: not a conversation record ({exc})") from None
