"""Counters per language: what was asked, what came back, what was kept and why the rest was dropped.

`candidates` (tasks read from answers) equals `kept` plus the sum of `dropped`, whose reasons are the filter's
(polylm.selfinstruct.filters.REASONS) plus `truncated` (last task of an answer cut by the token limit) and
`surplus` (passed the filters after the language had reached its target, from requests already in flight).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LanguageStats:
    target: int = 0
    kept: int = 0
    candidates: int = 0
    dropped: Counter = field(default_factory=Counter)
    rounds: int = 0
    """Generation prompts sent (each retried until answered)."""
    requests: int = 0
    """HTTP requests sent (retries included), generation and seed translation."""
    answers: int = 0
    """Generation answers that contained tasks."""
    unparsable: int = 0
    """Generation requests given up because every answer to them was unparsable."""
    retries: Counter = field(default_factory=Counter)
    """Retried attempts by cause: `429`, `5xx`, `timeout`, `connection`, `bad_response`, `unparsable`."""
    seeds: dict = field(default_factory=dict)
    """`source` (file, translated), `count`, and for translated seeds `translated` and `dropped` by reason."""

    def count_attempt(self, cause: str | None) -> None:
        """`ChatClient.complete`'s `on_attempt`: one request sent, and its failure cause if it failed."""
        self.requests += 1
        if cause:
            self.retries[cause] += 1

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "kept": self.kept,
            "candidates": self.candidates,
            "dropped": dict(sorted(self.dropped.items())),
            "rounds": self.rounds,
            "requests": self.requests,
            "answers": self.answers,
            "unparsable": self.unparsable,
            "retries": dict(sorted(self.retries.items())),
            "seeds": self.seeds,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LanguageStats:
        return cls(
            target=data.get("target", 0),
            kept=data.get("kept", 0),
            candidates=data.get("candidates", 0),
            dropped=Counter(data.get("dropped", {})),
            rounds=data.get("rounds", 0),
            requests=data.get("requests", 0),
            answers=data.get("answers", 0),
            unparsable=data.get("unparsable", 0),
            retries=Counter(data.get("retries", {})),
            seeds=data.get("seeds", {}),
        )


def summary(stats: dict[str, LanguageStats]) -> dict:
    """stats.json: every language, and totals over them."""
    dropped: Counter = Counter()
    retries: Counter = Counter()
    for lang_stats in stats.values():
        dropped.update(lang_stats.dropped)
        retries.update(lang_stats.retries)
    return {
        "languages": {lang: lang_stats.to_dict() for lang, lang_stats in stats.items()},
        "total": {
            "kept": sum(s.kept for s in stats.values()),
            "candidates": sum(s.candidates for s in stats.values()),
            "dropped": dict(sorted(dropped.items())),
            "requests": sum(s.requests for s in stats.values()),
            "retries": dict(sorted(retries.items())),
        },
    }


def table(stats: dict[str, LanguageStats]) -> str:
    """One line per language for the terminal: kept of target, requests, and drops by reason."""
    lines = []
    for lang, s in stats.items():
        reasons = ", ".join(f"{reason} {count}" for reason, count in s.dropped.most_common()) or "none"
        lines.append(
            f"{lang}: kept {s.kept}/{s.target} of {s.candidates} candidates from {s.rounds} rounds "
            f"({s.requests} requests); dropped: {reasons}"
        )
    return "\n".join(lines)
