"""The self-instruct loop: rounds of prompts per language until each has its target of kept tasks.

A round samples k demonstrations (about a third from the language's kept tasks once there are some, the rest
from its seeds, as Self-Instruct mixes machine and human tasks), asks for `new_per_prompt` more, parses the
answer and passes each task through the language's filter. Up to `concurrency` rounds are in flight at once,
over all languages; a free slot goes to the unfinished language with the fewest rounds in flight. Each
answer's kept tasks are appended to OUT/<lang>.jsonl before the counters are saved (polylm.selfinstruct.state).
A language stops at its target, or after `max_rounds` rounds (a model too weak for the prompt).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from tqdm import tqdm

from polylm.errors import PolyLMError
from polylm.progress import progress_bar
from polylm.selfinstruct.client import ChatClient, Completion
from polylm.selfinstruct.config import EndpointConfig, SelfInstructConfig
from polylm.selfinstruct.filters import TaskFilter
from polylm.selfinstruct.locales import locale
from polylm.selfinstruct.parser import Parsed, parse_answer
from polylm.selfinstruct.prompts import generation_prompt
from polylm.selfinstruct.seeds import read_seed_file, translate_seeds, user_seeds
from polylm.selfinstruct.state import Store
from polylm.selfinstruct.stats import LanguageStats, summary
from polylm.selfinstruct.task import Task

STATE_VERSION = 1


def self_instruct(
    config: SelfInstructConfig,
    endpoint: EndpointConfig,
    out: Path,
    seeds_dir: Path | None = None,
    seed_tasks: Path | None = None,
    progress: bool = True,
) -> dict[str, LanguageStats]:
    """Run (or resume) the self-instruct run of `out` against `endpoint`; each language's stats, also written to
    OUT/stats.json. Seeds come from `seeds_dir/<lang>.jsonl`, else from translating the English `seed_tasks`."""
    if seeds_dir is not None and not seeds_dir.is_dir():
        raise PolyLMError(f"--seeds {seeds_dir}: not a directory")
    if seed_tasks is not None and not seed_tasks.is_file():
        raise PolyLMError(f"--seed-tasks {seed_tasks}: no such file")
    english = read_seed_file(seed_tasks) if seed_tasks is not None else None
    store = Store(out)

    async def run() -> dict[str, LanguageStats]:
        client = endpoint.client()
        try:
            return await SelfInstruct(config, client, store, seeds_dir, english, progress).run()
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    finally:
        store.close()


class SelfInstruct:
    """One run over OUT (new or resumed)."""

    def __init__(
        self,
        config: SelfInstructConfig,
        client: ChatClient,
        store: Store,
        seeds_dir: Path | None = None,
        english: list[tuple[str, Task]] | None = None,
        progress: bool = True,
    ) -> None:
        self.config, self.client, self.store = config, client, store
        self.english = english
        self.progress = progress
        saved = store.load_state().get("languages", {})
        self.stats = {lang: LanguageStats.from_dict(saved.get(lang, {})) for lang in config.languages}
        self.filters = {lang: TaskFilter(locale(lang), config.filters) for lang in config.languages}
        self.seeds: dict[str, list[Task]] = {}
        self.kept: dict[str, list[Task]] = {}
        self.inflight = dict.fromkeys(config.languages, 0)
        self._bar: tqdm | None = None
        for lang in config.languages:
            self.stats[lang].target = config.per_language
            given = user_seeds(seeds_dir, lang)
            if given:
                self.seeds[lang] = given
                self.stats[lang].seeds.update(source="file", count=len(given))
            elif english is None and not store.load_cache(lang):
                raise PolyLMError(
                    f"self-instruct: no seeds for {lang}: put {lang}.jsonl in the --seeds directory, or pass "
                    "--seed-tasks FILE (English seed tasks) to translate them"
                )
        self.rng = random.Random(f"{config.seed}-{sum(s.requests for s in self.stats.values())}")

    def save(self) -> None:
        self.store.save_state(
            {"version": STATE_VERSION, "languages": {lang: s.to_dict() for lang, s in self.stats.items()}}
        )

    async def run(self) -> dict[str, LanguageStats]:
        """Generate until every language has its target or is out of rounds; stats.json is written even when
        the endpoint fails."""
        try:
            await self.client.check()
            await self._prepare_seeds()
            for lang in self.config.languages:
                for task in self.seeds[lang]:
                    self.filters[lang].add(task)
                self.kept[lang] = self.store.load_records(lang)
                for task in self.kept[lang]:
                    self.filters[lang].add(task)
                self.stats[lang].kept = len(self.kept[lang])
            self.save()
            targets = self.config.per_language * len(self.config.languages)
            initial = sum(min(s.kept, s.target) for s in self.stats.values())
            with progress_bar(total=targets, initial=initial, unit="task", disable=not self.progress) as self._bar:
                self._show()
                await asyncio.gather(*(self._worker() for _ in range(self.client.concurrency)))
        finally:
            self.store.save_stats(summary(self.stats))
        return self.stats

    async def _prepare_seeds(self) -> None:
        async def one(lang: str) -> None:
            stats = self.stats[lang]
            stats.seeds.setdefault("source", "translated")
            english = (self.english or [])[: self.config.translate]
            seeds = await translate_seeds(
                self.client,
                self.store,
                self.filters[lang],
                english,
                stats,
                self.save,
                max_tokens=self.config.translate_max_tokens,
                temperature=self.config.translate_temperature,
            )
            if not seeds:
                dropped = stats.seeds.get("dropped", {})
                raise PolyLMError(f"self-instruct: no usable seed translation for {lang} (dropped: {dropped})")
            stats.seeds["count"] = len(seeds)
            self.seeds[lang] = seeds

        await asyncio.gather(*(one(lang) for lang in self.config.languages if lang not in self.seeds))

    def _open(self, lang: str) -> bool:
        s = self.stats[lang]
        return s.kept < s.target and s.rounds + self.inflight[lang] < self.config.rounds_limit

    def _pick(self) -> str | None:
        open_languages = [lang for lang in self.config.languages if self._open(lang)]
        if not open_languages:
            return None
        return min(open_languages, key=lambda lang: (self.inflight[lang], self.stats[lang].kept))

    async def _worker(self) -> None:
        while (lang := self._pick()) is not None:
            self.inflight[lang] += 1
            try:
                await self._round(lang)
            finally:
                self.inflight[lang] -= 1

    def _demos(self, lang: str) -> list[Task]:
        def short(tasks: list[Task]) -> list[Task]:
            fitting = [
                t for t in tasks if len(t.instruction) + len(t.input) + len(t.output) <= self.config.max_demo_chars
            ]
            return fitting or tasks

        k = self.config.demos
        machine = self.rng.sample(self.kept[lang], min(len(self.kept[lang]), k // 3))
        seeds = short(self.seeds[lang])
        human = self.rng.sample(seeds, min(len(seeds), k - len(machine)))
        demos = human + machine
        self.rng.shuffle(demos)
        return demos

    async def _round(self, lang: str) -> None:
        stats = self.stats[lang]
        demos = self._demos(lang)
        first = len(demos) + 1
        last = len(demos) + self.config.new_per_prompt

        def parse(completion: Completion) -> Parsed | None:
            parsed = parse_answer(completion.text, first, completion.finish_reason == "length")
            return parsed if parsed and (parsed.tasks or parsed.truncated) else None

        stats.rounds += 1
        parsed = await self.client.complete(
            generation_prompt(self.filters[lang].locale, demos, self.config.new_per_prompt),
            parse,
            max_tokens=self.config.max_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            stop=[f"{last + 1}. Instruction"],
            on_attempt=stats.count_attempt,
        )
        if parsed is None:
            stats.unparsable += 1
        else:
            self._keep(lang, parsed)
        self.save()

    def _keep(self, lang: str, parsed: Parsed) -> None:
        stats, check = self.stats[lang], self.filters[lang]
        stats.answers += 1
        stats.candidates += len(parsed.tasks) + parsed.truncated
        if parsed.truncated:
            stats.dropped["truncated"] += parsed.truncated
        kept: list[Task] = []
        for task in parsed.tasks:
            reason = check.reason(task)
            if reason is None and stats.kept + len(kept) >= stats.target:
                reason = "surplus"
            if reason:
                stats.dropped[reason] += 1
                continue
            check.add(task)
            kept.append(task)
        self.store.append_records(lang, kept)
        self.kept[lang].extend(kept)
        stats.kept += len(kept)
        if kept and self._bar is not None:
            self._bar.update(len(kept))
            self._show()

    def _show(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(" ".join(f"{lang} {s.kept}/{s.target}" for lang, s in self.stats.items()))
