"""Corpus readers: files -> `Document`s (monolingual) or `Pair`s (parallel), streamed line by line.

Monolingual formats come from the suffix: `.jsonl`/`.json` (one JSON object per line), `.txt` (a document per
non-empty line, or per blank-line separated paragraph), `.parquet` (read in record batches); `.gz` or `.zst`
may wrap jsonl, json and txt (e.g. `web.jsonl.zst`). Parallel files get their format from the config key
(`tsv`, `jsonl`, `src_file`/`tgt_file`), so any suffix works (Tatoeba's `tatoeba.ara-eng.ara`), again with
optional `.gz`/`.zst`. Nothing is read whole into memory.

Two kinds of trouble are kept apart. Mistakes in the config (a missing file, an unsupported suffix, a Parquet
file without a string text column, a language code that is not two lowercase letters) raise `PolyLMError`
naming the file, at the call, before anything is read. Problems inside a corpus are counted in the ledger by
kind, with FILE:LINE, and reading goes on: `invalid_utf8`, `malformed_json`, `missing_field`, `malformed_tsv`,
`unknown_language`, `empty_side`, `misaligned`, `corrupt_file` (a truncated or corrupt compressed stream:
the rest of that file is lost; for Parquet, a corrupt data page) and `empty_file` (a file that gave nothing).
A JSON string holding a lone surrogate (an escape such as `\\ud800`, which no UTF-8 text can hold) counts as
`invalid_utf8`; an integer of more than 4300 digits or nesting past Python's recursion limit as `malformed_json`.
Blank lines are not records and are skipped without a count (in JSON Lines, blank means JSON whitespace only: a
line of other Unicode spaces is malformed). A UTF-8 byte order mark at the start of a file is dropped. Line and
row numbers are 1-based; ids are `FILE:LINE` (`FILE:ROW` for Parquet, the first line of a paragraph).

Why not datatrove's readers: they count documents, not malformed lines by reason with file and line in our
Ledger (a bad JSON line is logged and lost), and they bring fsspec and a multi-task executor that a
one-machine pipeline does not need.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from polylm.data.documents import Document, Ledger
from polylm.errors import PolyLMError

TEXT_FORMATS = (".jsonl", ".json", ".txt")
COMPRESSIONS = (".gz", ".zst")
TEXT_MODES = ("line", "paragraph")
CHUNK_BYTES = 1 << 16
_LANG_CODE = re.compile(r"[a-z]{2}")
LANG_KEYS = ("src_lang", "tgt_lang")
_CORRUPT = (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError)
JSON_BLANK = " \t\r\n"
"""JSON's whitespace: a JSON Lines line of nothing else is blank; `str.strip()` would also take `\\x0c` or `\\u3000`."""
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Pair:
    """One aligned sentence pair of a parallel source."""

    src: str
    tgt: str
    src_lang: str
    tgt_lang: str
    source: str
    id: str
    """`FILE:LINE` of the pair (of the source-side file for two aligned files)."""


def _check_lang(lang: object, where: str) -> str:
    """Any ISO 639-1-shaped code is accepted; only POLYLM_LANGUAGES get a language-ID check later."""
    if not isinstance(lang, str) or not _LANG_CODE.fullmatch(lang):
        raise PolyLMError(f"{where}: language {lang!r} is not an ISO 639-1 code (two lowercase letters)")
    return lang


def _compression(path: Path) -> str | None:
    """`.gz` or `.zst` when the last suffix says so; checks that the file exists."""
    if not path.is_file():
        raise PolyLMError(f"{path}: file not found")
    suffix = path.suffix.lower()
    return suffix if suffix in COMPRESSIONS else None


def _format(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix or None) of a monolingual file, or PolyLMError for what we cannot read."""
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSIONS
    fmt = suffixes[-2 if compressed else -1] if len(suffixes) > compressed else ""
    if fmt in TEXT_FORMATS or (fmt == ".parquet" and not compressed):
        return fmt, _compression(path)
    raise PolyLMError(
        f"{path}: unsupported format {''.join(path.suffixes) or '(no suffix)'!r} "
        "(.jsonl, .json, .txt, optionally .gz or .zst; .parquet)"
    )


def _zstd_chunks(handle: BinaryIO) -> Iterator[bytes]:
    """Frame after frame; unlike zstandard's stream reader, a stream cut inside a frame is an error, not an end."""
    decompressor = zstandard.ZstdDecompressor()
    frame, pending = decompressor.decompressobj(), False
    while chunk := handle.read(CHUNK_BYTES):
        while chunk:
            out, pending = frame.decompress(chunk), True
            if out:
                yield out
            if frame.eof:
                chunk, frame, pending = frame.unused_data, decompressor.decompressobj(), False
            else:
                chunk = b""
    if pending:
        raise EOFError("the zstd stream ends inside a frame")


def _chunks(path: Path, compression: str | None) -> Iterator[bytes]:
    if compression == ".zst":
        with path.open("rb") as handle:
            yield from _zstd_chunks(handle)
        return
    with gzip.open(path, "rb") if compression == ".gz" else path.open("rb") as handle:
        # read1: one read of the stream per chunk. read() would gather up to CHUNK_BYTES over several, and a cut
        # gzip stream's EOFError in the last would lose what the others had decompressed (whole lines).
        while chunk := handle.read1(CHUNK_BYTES):
            yield chunk


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines without their `\\n`; a line that spans chunks is joined once, so long lines cost linear time."""
    partial: list[bytes] = []
    for chunk in chunks:
        parts = chunk.split(b"\n")
        if len(parts) > 1:
            yield b"".join([*partial, parts[0]])
            yield from parts[1:-1]
            partial = []
        partial.append(parts[-1])
    if any(partial):
        yield b"".join(partial)


def _decode(raw: bytes, number: int, where: str, ledger: Ledger) -> str | None:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        ledger.error("invalid_utf8", f"{where}:{number}: not valid UTF-8 (byte {exc.start})")
        return None


def _text_lines(path: Path, compression: str | None, ledger: Ledger) -> Iterator[tuple[int, str]]:
    """(line number, line) of the decodable lines; the others, and a corrupt stream, are counted."""
    number = 0
    try:
        for number, raw in enumerate(_split_lines(_chunks(path, compression)), start=1):
            line = _decode(raw, number, str(path), ledger)
            if line is not None:
                yield number, line
    except _CORRUPT as exc:
        ledger.error("corrupt_file", f"{path}:{number + 1}: compressed stream is corrupt or truncated ({exc})")


def _json_object(line: str, where: str, ledger: Ledger) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        ledger.error("malformed_json", f"{where}: not a JSON object ({exc.msg} at column {exc.colno})")
        return None
    except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits; nesting past the recursion limit
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "an integer too long to read"
        ledger.error("malformed_json", f"{where}: not a JSON object ({reason})")
        return None
    if not isinstance(record, dict):
        ledger.error("malformed_json", f"{where}: not a JSON object (got {type(record).__name__})")
        return None
    return record


def _string_field(record: dict, key: str, where: str, ledger: Ledger) -> str | None:
    value = record.get(key)
    if isinstance(value, str):
        if surrogate := _SURROGATE.search(value):
            ledger.error("invalid_utf8", f"{where}: {key!r} field holds a lone surrogate ({surrogate[0]!a})")
            return None
        return value
    kind = "" if value is None else f" (got {type(value).__name__}, expected a string)"
    ledger.error("missing_field", f"{where}: no {key!r} field{kind}")
    return None


def _jsonl_texts(path: Path, compression: str | None, field: str, ledger: Ledger) -> Iterator[tuple[int, str]]:
    for number, line in _text_lines(path, compression, ledger):
        if line.strip(JSON_BLANK):
            record = _json_object(line, f"{path}:{number}", ledger)
            text = None if record is None else _string_field(record, field, f"{path}:{number}", ledger)
            if text is not None:
                yield number, text


def _paragraphs(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    first, paragraph = 0, []
    for number, line in lines:
        if line.strip():
            first = first or number
            paragraph.append(line)
        elif paragraph:
            yield first, "\n".join(paragraph)
            first, paragraph = 0, []
    if paragraph:
        yield first, "\n".join(paragraph)


def _parquet_texts(path: Path, field: str, ledger: Ledger) -> Iterator[tuple[int, str]]:
    import pyarrow as pa  # heavy; only Parquet sources need it
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise PolyLMError(f"{path}: not a readable Parquet file ({exc})") from None
    schema, problem = parquet.schema_arrow, None
    if field not in schema.names:
        problem = f"no column {field!r} (columns: {', '.join(schema.names)})"
    elif not (pa.types.is_string(kind := schema.field(field).type) or pa.types.is_large_string(kind)):
        problem = f"column {field!r} has type {kind}, expected string"
    if problem is not None:
        parquet.close()
        raise PolyLMError(f"{path}: {problem}")
    return _parquet_rows(parquet, path, field, ledger)


def _parquet_rows(parquet, path: Path, field: str, ledger: Ledger) -> Iterator[tuple[int, str]]:
    """The rows' texts; a corrupt data page ends the file as `corrupt_file` (the footer read fine, so it is the
    corpus at fault, not the config), like a cut compressed stream."""
    import pyarrow as pa  # loaded already by _parquet_texts

    row = 0
    with parquet:
        try:
            for batch in parquet.iter_batches(columns=[field], batch_size=1024):
                for value in _column_values(batch.column(0)):
                    row += 1
                    if value is None:
                        ledger.error("missing_field", f"{path}:{row}: no {field!r} field (null)")
                    elif isinstance(value, bytes):
                        try:
                            yield row, value.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            ledger.error("invalid_utf8", f"{path}:{row}: not valid UTF-8 (byte {exc.start})")
                    else:
                        yield row, value
        except (OSError, pa.ArrowException) as exc:
            ledger.error("corrupt_file", f"{path}:{row + 1}: Parquet data is corrupt ({exc})")


def _column_values(column) -> list:
    """A string column's values; when a corrupt page holds bytes that are not UTF-8, the batch's values come as
    bytes instead, for the bad rows to be counted one by one."""
    import pyarrow as pa  # loaded already by _parquet_texts

    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        return column.view(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()).to_pylist()


def read_documents(
    path: Path, lang: str, source: str, ledger: Ledger, text_field: str = "text", text_mode: str = "line"
) -> Iterator[Document]:
    """Stream the documents of one file; config mistakes raise here, at the call, before anything is read.

    `text_mode` applies to `.txt` only (JSON and Parquet records are documents already).
    """
    path = Path(path)
    _check_lang(lang, str(path))
    if text_mode not in TEXT_MODES:
        raise PolyLMError(f"{path}: text_mode {text_mode!r} is not one of {', '.join(TEXT_MODES)}")
    fmt, compression = _format(path)
    if fmt == ".parquet":
        texts = _parquet_texts(path, text_field, ledger)
    elif fmt == ".txt" and text_mode == "line":
        texts = ((number, line) for number, line in _text_lines(path, compression, ledger) if line.strip())
    elif fmt == ".txt":
        texts = _paragraphs(_text_lines(path, compression, ledger))
    else:
        texts = _jsonl_texts(path, compression, text_field, ledger)
    return _documents(texts, path, lang, source, ledger)


def _documents(
    texts: Iterator[tuple[int, str]], path: Path, lang: str, source: str, ledger: Ledger
) -> Iterator[Document]:
    count = 0
    for number, text in texts:
        count += 1
        ledger.read[source] += 1
        yield Document(text=text, lang=lang, source=source, id=f"{path}:{number}")
    if count == 0:
        ledger.error("empty_file", f"{path}: no documents")


def _pair(texts: Sequence[str], langs: Sequence[str], source: str, id: str, where: str, ledger: Ledger) -> Pair | None:
    """Both sides stripped; a pair with an empty side is counted as `empty_side` and skipped."""
    src, tgt = (text.strip() for text in texts)
    for text, side in ((src, "src"), (tgt, "tgt")):
        if not text:
            ledger.error("empty_side", f"{where}: empty {side} side")
            return None
    return Pair(src, tgt, langs[0], langs[1], source, id)


def _tsv_pairs(
    path: Path, compression: str | None, langs: tuple[str, str], source: str, ledger: Ledger
) -> Iterator[Pair]:
    for number, line in _text_lines(path, compression, ledger):
        if not line.strip():
            continue
        where, fields = f"{path}:{number}", line.split("\t")
        if len(fields) != 2:
            ledger.error("malformed_tsv", f"{where}: expected 2 tab-separated fields, got {len(fields)}")
        elif pair := _pair((fields[0], fields[1]), langs, source, where, where, ledger):
            yield pair


def _record_lang(record: dict, key: str, default: str | None, where: str, ledger: Ledger) -> str | None:
    lang = record.get(key, default)
    if isinstance(lang, str) and _LANG_CODE.fullmatch(lang):
        return lang
    ledger.error("unknown_language", f"{where}: {key} {lang!r} is not an ISO 639-1 code (two lowercase letters)")
    return None


def _jsonl_pairs(
    path: Path, compression: str | None, defaults: tuple[str | None, str | None], source: str, ledger: Ledger
) -> Iterator[Pair]:
    for number, line in _text_lines(path, compression, ledger):
        where = f"{path}:{number}"
        record = _json_object(line, where, ledger) if line.strip(JSON_BLANK) else None
        if record is None:
            continue
        texts = [_string_field(record, key, where, ledger) for key in ("src", "tgt")]
        if None in texts:
            continue
        langs = [
            _record_lang(record, key, default, where, ledger) for key, default in zip(LANG_KEYS, defaults, strict=True)
        ]
        if None not in langs and (pair := _pair(texts, langs, source, where, where, ledger)):
            yield pair


def _aligned_pairs(
    files: tuple[Path, Path], compressions: list[str | None], langs: tuple[str, str], source: str, ledger: Ledger
) -> Iterator[Pair]:
    """Line i of one file with line i of the other; an undecodable side skips that pair."""
    readers = [_split_lines(_chunks(path, compression)) for path, compression in zip(files, compressions, strict=True)]
    number = 0
    try:
        while True:
            number += 1
            raws = [next(reader, None) for reader in readers]
            if raws == [None, None]:
                return
            if None in raws:
                ended, other = files if raws[0] is None else files[::-1]
                ledger.error(
                    "misaligned", f"{files[0]} and {files[1]}: {ended} ends before line {number}, {other} goes on"
                )
                return
            texts = [_decode(raw, number, str(path), ledger) for path, raw in zip(files, raws, strict=True)]
            where = f"{files[0]}:{number} / {files[1]}:{number}"
            if None not in texts and (pair := _pair(texts, langs, source, f"{files[0]}:{number}", where, ledger)):
                yield pair
    except _CORRUPT as exc:
        ledger.error("corrupt_file", f"{files[0]} / {files[1]}:{number}: compressed stream is corrupt ({exc})")


def read_pairs(
    source: str,
    ledger: Ledger,
    *,
    tsv: Path | None = None,
    jsonl: Path | None = None,
    src_file: Path | None = None,
    tgt_file: Path | None = None,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
) -> Iterator[Pair]:
    """Stream the pairs of one parallel entry: exactly one of `tsv`, `jsonl`, or `src_file` + `tgt_file`.

    `tsv` (src<TAB>tgt) and aligned files need `src_lang` and `tgt_lang`; in `jsonl` ({src, tgt, src_lang,
    tgt_lang}) each record carries its own codes, and declared ones, when given, fill in for a record
    without them. `ledger.read[source]` counts pairs.
    """
    where = f"source {source!r}"
    aligned = src_file is not None or tgt_file is not None
    if (tsv is not None) + (jsonl is not None) + aligned != 1 or (aligned and (src_file is None or tgt_file is None)):
        raise PolyLMError(f"{where}: a parallel entry needs exactly one of tsv, jsonl, or src_file + tgt_file")
    if jsonl is not None:
        path = Path(jsonl)
        for lang in (src_lang, tgt_lang):
            if lang is not None:
                _check_lang(lang, f"{where}: {path}")
        pairs = _jsonl_pairs(path, _compression(path), (src_lang, tgt_lang), source, ledger)
        return _counted(pairs, source, [path], ledger)
    files = (Path(tsv),) if tsv is not None else (Path(src_file), Path(tgt_file))
    if src_lang is None or tgt_lang is None:
        raise PolyLMError(f"{where}: {files[0]}: src_lang and tgt_lang are required for tsv and aligned files")
    langs = (_check_lang(src_lang, f"{where}: {files[0]}"), _check_lang(tgt_lang, f"{where}: {files[0]}"))
    compressions = [_compression(path) for path in files]
    if tsv is not None:
        pairs = _tsv_pairs(files[0], compressions[0], langs, source, ledger)
    else:
        pairs = _aligned_pairs((files[0], files[1]), compressions, langs, source, ledger)
    return _counted(pairs, source, list(files), ledger)


def _counted(pairs: Iterator[Pair], source: str, files: list[Path], ledger: Ledger) -> Iterator[Pair]:
    count = 0
    for pair in pairs:
        count += 1
        ledger.read[source] += 1
        yield pair
    if count == 0:
        ledger.error("empty_file", f"{' and '.join(map(str, files))}: no pairs")
