"""The output directory as the run's memory, so that a killed run resumes without losing or repeating a task.

`OUT/<lang>.jsonl` is append-only and is the truth for kept tasks: a task counts once its line (with the
newline) is written and fsynced, and the counters in `OUT/state.json` are replaced atomically (temporary
file, fsync, rename) only after that. A kill between the two leaves the counters one answer behind; the
records are never behind. On resume a last line without its newline (a write cut by the kill) is removed,
the kept tasks go back into the filter pools (so a task generated again is a duplicate, not a second copy),
and the counters continue from state.json. All of it goes through `polylm.durable`, and `polylm.runlock`
keeps a second run off the same directory.
Translated seeds are cached the same way in `OUT/seeds/<lang>.jsonl` (editable; lines keep the English
seed's `id`).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from polylm.durable import append_jsonl, cut_torn_tail, read_jsonl, write_json
from polylm.errors import PolyLMError
from polylm.runlock import hold_run_dir
from polylm.selfinstruct.task import Task, task_from_record


class Store:
    """OUT/<lang>.jsonl, OUT/state.json and OUT/seeds/<lang>.jsonl of one run, held under OUT/.lock."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._held = ExitStack()
        self._held.enter_context(hold_run_dir(out, "polylm self-instruct"))
        (out / "seeds").mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        self._held.close()

    def records_path(self, lang: str) -> Path:
        return self.out / f"{lang}.jsonl"

    def cache_path(self, lang: str) -> Path:
        return self.out / "seeds" / f"{lang}.jsonl"

    def load_records(self, lang: str) -> list[Task]:
        """The tasks kept so far (an incomplete last line is removed first)."""
        path = self.records_path(lang)
        cut_torn_tail(path)
        return [task_from_record(row) for row in read_jsonl(path).records]

    def append_records(self, lang: str, tasks: list[Task]) -> None:
        append_jsonl(self.records_path(lang), [task.record() for task in tasks])

    def load_cache(self, lang: str) -> list[dict]:
        """Translated seeds: `{"id", "instruction", "input", "output"}` rows."""
        path = self.cache_path(lang)
        cut_torn_tail(path)
        return read_jsonl(path).records

    def append_cache(self, lang: str, seed_id: str, task: Task) -> None:
        append_jsonl(self.cache_path(lang), [{"id": seed_id, **task.record()}])

    def load_state(self) -> dict:
        path = self.out / "state.json"
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PolyLMError(f"{path}: not JSON ({exc.msg}); delete it to restart the counters") from None

    def save_state(self, state: dict) -> None:
        write_json(self.out / "state.json", state)

    def save_stats(self, stats: dict) -> None:
        write_json(self.out / "stats.json", stats)
