"""Durable writes: what a kill -9 or a power cut at any instant may leave behind, and how readers treat it.

Every file polylm keeps across runs is written through one of three shapes:
- **whole files** (`written_whole`, `write_text`, `write_json`): written beside the target, flushed and fsynced,
  renamed over it, and the directory fsynced, so the target is the old version or the new one, never a mix;
- **whole directories** (`replace_dir`, `remove_dir`): a complete directory renamed into place (the one it
  replaces moved aside first, and restored by the next call if a kill fell between the two renames); a
  directory being removed is hidden first, so a half-deleted one never keeps its public name;
- **append-only JSONL logs** (`append_jsonl`): one `write` per batch of records, then fsync. A record counts once
  its newline is on disk: `read_jsonl` reports a last line without its newline as torn (a write the kill cut)
  rather than failing, `cut_torn_tail` removes it before appending again, and `rewrite_jsonl` filters a log
  through an atomic rewrite. Any other malformed line stops with `FILE:LINE`: that is damage, not a kill.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from polylm.errors import PolyLMError


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (POSIX; elsewhere directories cannot be opened)."""
    if os.name != "posix":
        return
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def sync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (deepest first), before `root` is renamed into place."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(root)


def close_synced(handle: IO) -> None:
    """Flush, fsync and close a file this process wrote."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


@contextmanager
def written_whole(path: Path, mode: str = "w") -> Iterator[IO]:
    """A file that appears at `path` only complete (flushed, synced, renamed into place), or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with temp.open(mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)  # a kill -9 leaves it: hidden, and replaced by the next write of this pid
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    with written_whole(path, "wb") as handle:
        handle.write(data)


def write_text(path: Path, text: str) -> None:
    with written_whole(path) as handle:
        handle.write(text)


def write_json(path: Path, data: object) -> None:
    """Indented UTF-8 JSON, replaced atomically."""
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def replace_dir(new: Path, target: Path) -> None:
    """Put the complete directory `new` at `target`; the `target` it replaces is moved aside, then removed."""
    aside = target.parent / f".{target.name}.old"
    if aside.exists() and not target.exists():
        aside.rename(target)  # a kill fell between the two renames below: the old one is the complete one
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        target.rename(aside)
    new.rename(target)
    fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Remove a directory so that a kill half-way never leaves part of it under its own name."""
    hidden = path.parent / f".{path.name}.removing"
    shutil.rmtree(hidden, ignore_errors=True)
    path.rename(hidden)
    fsync_dir(path.parent)
    shutil.rmtree(hidden)


def _lines(records: Iterable[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def append_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Append records, one JSON object per line, in one write, then fsync: on disk they count."""
    text = _lines(records)
    if not text:
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def cut_torn_tail(path: Path) -> int:
    """Cut a last line without its newline (a write cut by a kill) from `path`; the number of bytes removed."""
    if not path.exists():
        return 0
    with path.open("rb+") as handle:
        data = handle.read()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
        return len(data) - keep


@dataclass
class JsonlContents:
    records: list[dict]
    torn_bytes: int  # the length of a last line without its newline, which is not in `records`


def read_jsonl(path: Path) -> JsonlContents:
    """The records of an append-only JSONL log; a missing file has none.

    A last line without its newline is torn (reported in `torn_bytes`, not parsed); any other line that is not a
    JSON object raises a PolyLMError naming FILE:LINE.
    """
    if not path.exists():
        return JsonlContents([], 0)
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:complete].split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            raise PolyLMError(f"{path}:{number}: not a JSON record ({why}); the file is damaged") from None
        if not isinstance(record, dict):
            raise PolyLMError(f"{path}:{number}: expected a JSON object; the file is damaged")
        records.append(record)
    return JsonlContents(records, len(data) - complete)


def rewrite_jsonl(path: Path, keep: Callable[[dict], bool]) -> list[dict]:
    """Keep the records for which `keep(record)` holds (dropping a torn tail), replaced atomically."""
    kept = [record for record in read_jsonl(path).records if keep(record)]
    write_text(path, _lines(kept))
    return kept
