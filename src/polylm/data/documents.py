"""What flows through the data pipeline: documents, and the ledger that counts every drop by reason.

Modelled on datatrove: each step is a generator over documents; a step that drops one calls
`ledger.drop(reason, doc)`, which counts it (and writes it to the rejects file when one is open), so that
`polylm data stats` can account for every input document.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

# PolyLM's 18 languages (HF model card metadata), ISO 639-1.
POLYLM_LANGUAGES = (
    "zh",
    "en",
    "es",
    "fr",
    "pt",
    "ru",
    "de",
    "it",
    "ar",
    "ja",
    "ko",
    "th",
    "vi",
    "id",
    "nl",
    "pl",
    "tr",
    "he",
)


@dataclass
class Document:
    text: str
    lang: str
    """ISO 639-1 code the source declares (for a bilingual document: its non-English side)."""
    source: str
    """Name of the source in the data config."""
    id: str
    """Where it came from, e.g. `corpus/en.txt:17`: stable across runs, named in errors and rejects."""


@dataclass
class Ledger:
    """Counts of what each step kept and dropped, plus input errors (file and line), for stats and rejects."""

    drops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    read: Counter = field(default_factory=Counter)
    """Documents read per source."""
    entered: Counter = field(default_factory=Counter)
    """Documents that reached each step (`Filter.step`)."""
    kept_by: Counter = field(default_factory=Counter)
    """Documents each step passed on."""
    dropped_by: dict[str, Counter] = field(default_factory=dict)
    """Each step's drops by reason."""
    rejects: IO[str] | None = None
    position: int | None = None
    """Set by a distributed task to the reading position of the document in flight: each rejects line is then
    prefixed with it (`POSITION<TAB>JSON`), so that the tasks' rejects can be merged back into reading order."""

    def drop(self, reason: str, doc: Document, step: str | None = None) -> None:
        self.drops[reason] += 1
        if step is not None:
            self.dropped_by.setdefault(step, Counter())[reason] += 1
        if self.rejects is not None:
            record = {"reason": reason, "id": doc.id, "source": doc.source, "lang": doc.lang, "text": doc.text}
            prefix = "" if self.position is None else f"{self.position}\t"
            self.rejects.write(prefix + json.dumps(record, ensure_ascii=False) + "\n")

    def error(self, kind: str, message: str) -> None:
        """An input problem (bad UTF-8, malformed JSON, missing field...): counted, and the first ones kept verbatim."""
        self.errors[kind] += 1
        if len(self.error_examples) < 100:
            self.error_examples.append(message)

    def to_dict(self) -> dict:
        return {
            "read": dict(self.read),
            "drops": dict(self.drops),
            "errors": dict(self.errors),
            "error_examples": self.error_examples,
            "steps": {
                step: {"in": count, "kept": self.kept_by[step], "dropped": dict(self.dropped_by.get(step, {}))}
                for step, count in self.entered.items()
            },
        }

    def add(self, other: dict) -> None:
        """Add the counts of another ledger's `to_dict()` (a task's), keeping the first 100 examples in order."""
        self.read.update(other["read"])
        self.drops.update(other["drops"])
        self.errors.update(other["errors"])
        for step, counts in other.get("steps", {}).items():
            self.entered[step] += counts["in"]
            self.kept_by[step] += counts["kept"]
            self.dropped_by.setdefault(step, Counter()).update(counts["dropped"])
        self.error_examples.extend(other["error_examples"][: 100 - len(self.error_examples)])

    def open_rejects(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rejects = path.open("w", encoding="utf-8")
