"""The output directory as the run's memory, so that a killed run resumes without losing or repeating a task.

`OUT/<lang>.jsonl` is append-only and is the truth for kept tasks: a task counts once its line (with the
newline) is written and fsynced, and the counters in `OUT/state.json` are replaced atomically (temporary
file, fsync, rename) only after that. A kill between the two leaves the counters one answer behind; the
records are never behind. On resume a last line without its newline (a write cut by the kill) is removed,
the kept tasks go back into the filter pools (so a task generated again is a duplicate, not a second copy),
and the counters continue from state.json. A lock file keeps a second run off the same directory.
Translated seeds are cached the same way in `OUT/seeds/<lang>.jsonl` (editable; lines keep the English
seed's `id`).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO

from polylm.errors import PolyLMError
from polylm.selfinstruct.task import Task, task_from_record


def repair(path: Path) -> int:
    """Cut an incomplete last line (no newline) from `path`; the number of bytes removed."""
    if not path.exists():
        return 0
    with path.open("rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        return len(data) - keep


def read_jsonl(path: Path) -> list[dict]:
    """The objects of a JSONL file; a PolyLMError naming FILE:LINE for a line that is not a JSON object."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PolyLMError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise PolyLMError(f"{path}:{number}: expected a JSON object")
            rows.append(row)
    return rows


def _append(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """OUT/<lang>.jsonl, OUT/state.json and OUT/seeds/<lang>.jsonl of one run, held under OUT/.lock."""

    def __init__(self, out: Path) -> None:
        self.out = out
        (out / "seeds").mkdir(parents=True, exist_ok=True)
        self._lock: IO = (out / ".lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise PolyLMError(f"{out} is in use by another self-instruct run") from None

    def close(self) -> None:
        self._lock.close()

    def records_path(self, lang: str) -> Path:
        return self.out / f"{lang}.jsonl"

    def cache_path(self, lang: str) -> Path:
        return self.out / "seeds" / f"{lang}.jsonl"

    def load_records(self, lang: str) -> list[Task]:
        """The tasks kept so far (an incomplete last line is removed first)."""
        path = self.records_path(lang)
        repair(path)
        if not path.exists():
            return []
        return [task_from_record(row) for row in read_jsonl(path)]

    def append_records(self, lang: str, tasks: list[Task]) -> None:
        _append(self.records_path(lang), [task.record() for task in tasks])

    def load_cache(self, lang: str) -> list[dict]:
        """Translated seeds: `{"id", "instruction", "input", "output"}` rows."""
        path = self.cache_path(lang)
        repair(path)
        return read_jsonl(path) if path.exists() else []

    def append_cache(self, lang: str, seed_id: str, task: Task) -> None:
        _append(self.cache_path(lang), [{"id": seed_id, **task.record()}])

    def load_state(self) -> dict:
        path = self.out / "state.json"
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PolyLMError(f"{path}: not JSON ({exc.msg}); delete it to restart the counters") from None

    def save_state(self, state: dict) -> None:
        write_json_atomic(self.out / "state.json", state)

    def save_stats(self, stats: dict) -> None:
        write_json_atomic(self.out / "stats.json", stats)
