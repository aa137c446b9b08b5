"""Instruction files -> `Entry`s: JSON Lines or one JSON array (told apart by the first character), optionally
gzip-compressed (`.gz`, as the Open Assistant exports are), in one of the `formats.FORMATS`.

Every record comes out as an entry, so nothing is dropped silently: a line that is not UTF-8 or not a JSON
object, an array item that is not an object, a missing or mistyped field are malformed entries at `FILE:LINE`
(1-based) or `FILE[INDEX]` (0-based array index). A JSON array file that does not parse is one malformed entry
at the line where parsing failed (its records cannot be told apart); a file without any record, or a gzip
stream that is corrupt or cut (after the records read before it), is one at `FILE`. Blank lines are not
records. JSON arrays are read whole into memory (ShareGPT's 670 MB file takes a few GB); JSON Lines are
streamed.
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
            if not line.strip():
                continue
            try:
                yield where, _object(json.loads(line))
            except json.JSONDecodeError:
                yield where, Malformed("invalid JSON")
            except Malformed as exc:
                yield where, exc


def _json_array(path: Path) -> Iterator[tuple[str, dict | Malformed]]:
    with _open(path) as handle:
        raw = handle.read()
    try:
        items = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        yield f"{path}:{line}", Malformed("invalid UTF-8")
        return
    except json.JSONDecodeError as exc:
        yield f"{path}:{exc.lineno}", Malformed("invalid JSON")
        return
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        try:
            yield where, _object(item)
        except Malformed as exc:
            yield where, exc


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
    """Conversations from a JSON Lines file of `Conversation.to_dict()` (what `polylm instruct prepare` writes)."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield Conversation.from_dict(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise PolyLMError(f"{path}:{number}: not a conversation record ({exc})") from None
