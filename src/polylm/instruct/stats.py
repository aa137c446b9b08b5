"""What `polylm instruct prepare` counts, per source and language: read, kept (train / validation), dropped by
reason; and per source the malformed records by reason with their `FILE:LINE`. Saved as OUT/stats.json and
shown by `polylm instruct stats`.

Invariant, per source and language: read = train + validation + sum(dropped). Malformed records are outside
`read` (their language is unknown): records in the files = read + malformed.
"""

from __future__ import annotations

from collections import Counter

MALFORMED_EXAMPLES = 100
"""`FILE:LINE: reason` kept per source in stats.json; OUT/dropped.jsonl has all of them."""
SPLITS = ("train", "validation")


def _counts() -> dict:
    return {"read": 0, "train": 0, "validation": 0, "dropped": Counter()}


class Tally:
    def __init__(self, sources: dict[str, str]) -> None:
        """`sources`: name -> format, in the config's order (a source that gives nothing still shows)."""
        self.sources = {
            name: {"format": fmt, "languages": {}, "malformed": Counter(), "malformed_at": []}
            for name, fmt in sources.items()
        }

    def _lang(self, source: str, lang: str) -> dict:
        return self.sources[source]["languages"].setdefault(lang, _counts())

    def read(self, source: str, lang: str) -> None:
        self._lang(source, lang)["read"] += 1

    def kept(self, source: str, lang: str, split: str) -> None:
        self._lang(source, lang)[split] += 1

    def dropped(self, source: str, lang: str, reason: str) -> None:
        self._lang(source, lang)["dropped"][reason] += 1

    def malformed(self, source: str, reason: str, where: str) -> None:
        entry = self.sources[source]
        entry["malformed"][reason] += 1
        if len(entry["malformed_at"]) < MALFORMED_EXAMPLES:
            entry["malformed_at"].append(f"{where}: {reason}")

    def to_dict(self) -> dict:
        sources = {}
        languages: dict[str, dict] = {}
        for name, entry in self.sources.items():
            per_lang = {lang: _finished(counts) for lang, counts in sorted(entry["languages"].items())}
            total = _sum(per_lang.values())
            sources[name] = {
                "format": entry["format"],
                **total,
                "malformed": dict(entry["malformed"]),
                "malformed_at": entry["malformed_at"],
                "languages": per_lang,
            }
            for lang, counts in per_lang.items():
                languages[lang] = _sum([languages.get(lang, _finished(_counts())), counts])
        total = _sum(sources.values())
        total["malformed"] = sum(sum(s["malformed"].values()) for s in sources.values())
        return {"sources": sources, "languages": dict(sorted(languages.items())), "total": total}


def _finished(counts: dict) -> dict:
    kept = counts["train"] + counts["validation"]
    return {"read": counts["read"], "kept": kept, "train": counts["train"], "validation": counts["validation"],
            "dropped": dict(counts["dropped"])}  # fmt: skip


def _sum(parts) -> dict:
    total = {"read": 0, "kept": 0, "train": 0, "validation": 0}
    dropped: Counter = Counter()
    for part in parts:
        for key in total:
            total[key] += part[key]
        dropped.update(part["dropped"])
    return {**total, "dropped": dict(dropped)}


def table(stats: dict) -> str:
    """The stats as text: one row per source and language, then the malformed records of each source."""
    rows = [("source", "lang", "read", "kept", "train", "valid", "dropped by reason")]
    for name, source in stats["sources"].items():
        for lang, counts in source["languages"].items():
            rows.append((name, lang, *_numbers(counts), _reasons(counts["dropped"])))
        if len(source["languages"]) != 1:
            rows.append((name, "all", *_numbers(source), _reasons(source["dropped"])))
    rows.append(("total", "all", *_numbers(stats["total"]), _reasons(stats["total"]["dropped"])))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1])]
                       + [cell.rjust(width) for cell, width in zip(row[2:6], widths[2:], strict=True)]
                       + [row[6]]).rstrip() for row in rows]  # fmt: skip
    for name, source in stats["sources"].items():
        if source["malformed"]:
            lines.append(f"malformed records in {name}: {_reasons(source['malformed'])}")
            lines.extend(f"  {where}" for where in source["malformed_at"])
            shown = len(source["malformed_at"])
            if shown < sum(source["malformed"].values()):
                lines.append(f"  ... (first {shown}; all in dropped.jsonl)")
    return "\n".join(lines)


def _numbers(counts: dict) -> list[str]:
    return [f"{counts[key]:,}" for key in ("read", "kept", "train", "validation")]


def _reasons(counts: dict) -> str:
    return ", ".join(f"{reason}: {count:,}" for reason, count in sorted(counts.items(), key=lambda kv: -kv[1]))
