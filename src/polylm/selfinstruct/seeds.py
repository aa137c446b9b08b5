"""Seed tasks per language: the user's (`--seeds DIR/<lang>.jsonl`), or English seed tasks translated with
the same endpoint and cached in `OUT/seeds/<lang>.jsonl`.

A language with a seed file gets no translation request. Seed files may be MultiAlpaca/Alpaca records
(`instruction`, `input` (string, null or absent), `output`) or Self-Instruct's `seed_tasks.jsonl`
(`instruction`, `instances: [{input, output}]`, first instance used); records without an instruction or an
output are skipped. A translation must parse as one task and be identified as the target language; the
others are dropped (counted in the stats, and not asked again on resume). The cache is read back on resume
and can be edited, or copied into a `--seeds` directory for later runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from polylm.errors import PolyLMError
from polylm.selfinstruct.client import ChatClient, Completion
from polylm.selfinstruct.filters import TaskFilter
from polylm.selfinstruct.parser import parse_answer
from polylm.selfinstruct.prompts import translation_prompt
from polylm.selfinstruct.state import Store
from polylm.selfinstruct.stats import LanguageStats
from polylm.selfinstruct.task import Task, make_task, task_from_record


def _read_objects(path: Path) -> list[dict]:
    """The objects of a user's JSONL file; a PolyLMError naming FILE:LINE for a line that is not a JSON object."""
    rows = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolyLMError(f"{path}:{number}: not JSON ({getattr(exc, 'msg', 'not UTF-8')})") from None
        if not isinstance(row, dict):
            raise PolyLMError(f"{path}:{number}: expected a JSON object")
        rows.append(row)
    return rows


def read_seed_file(path: Path) -> list[tuple[str, Task]]:
    """(id, task) of every usable record of an Alpaca-style or Self-Instruct seed file."""
    seeds = []
    for number, row in enumerate(_read_objects(path), 1):
        instances = row.get("instances")
        if isinstance(instances, list) and instances and isinstance(instances[0], dict):
            row = {**instances[0], "instruction": row.get("instruction"), "id": row.get("id")}
        fields = [row.get(key) for key in ("instruction", "input", "output")]
        if not all(value is None or isinstance(value, str) for value in fields):
            raise PolyLMError(f"{path}: record {number}: instruction, input and output must be strings")
        task = make_task(*fields)
        if task.instruction and task.output:
            seeds.append((str(row.get("id") or f"line-{number}"), task))
    return seeds


def user_seeds(seeds_dir: Path | None, lang: str) -> list[Task] | None:
    """The tasks of `seeds_dir/<lang>.jsonl`, or None when there is no such file or it has no usable record."""
    path = seeds_dir / f"{lang}.jsonl" if seeds_dir else None
    if path is None or not path.is_file():
        return None
    return [task for _, task in read_seed_file(path)] or None


async def translate_seeds(
    client: ChatClient,
    store: Store,
    check: TaskFilter,
    english: list[tuple[str, Task]],
    stats: LanguageStats,
    save: Callable[[], None],
    *,
    max_tokens: int,
    temperature: float,
) -> list[Task]:
    """Translate the English seeds not yet cached or dropped; all cached translations for the language."""
    lang = check.locale.code
    seeds_stats = stats.seeds.setdefault("dropped", {})
    cached = {str(row.get("id")): row for row in store.load_cache(lang)}
    given_up = set(stats.seeds.get("dropped_ids", []))
    todo = [(seed_id, task) for seed_id, task in english if seed_id not in cached and seed_id not in given_up]

    def parse(completion: Completion) -> Task | None:
        parsed = parse_answer(completion.text, 1)
        tasks = parsed.tasks if parsed else []
        return tasks[0] if tasks and tasks[0].output else None

    async def one(seed_id: str, task: Task) -> None:
        prompt = translation_prompt(check.locale, task)
        translated = await client.complete(
            prompt, parse, max_tokens=max_tokens, temperature=temperature, on_attempt=stats.count_attempt
        )
        reason = "unparsable" if translated is None else check.language_mismatch(translated)
        if reason:
            seeds_stats[reason] = seeds_stats.get(reason, 0) + 1
            stats.seeds.setdefault("dropped_ids", []).append(seed_id)
        else:
            store.append_cache(lang, seed_id, translated)
            stats.seeds["translated"] = stats.seeds.get("translated", 0) + 1
        save()

    await asyncio.gather(*(one(seed_id, task) for seed_id, task in todo))
    return [task_from_record(row) for row in store.load_cache(lang)]
