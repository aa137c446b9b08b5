"""`polylm data stats`: what a prepared directory holds and where its documents went, as a dict and as text."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from polylm.data.filters import STEP_ORDER
from polylm.data.prepare import load_summary
from polylm.data.shards import ShardSet


def funnel(ledger: dict) -> list[dict]:
    """Per step, in the order documents meet them: documents in, kept, dropped by reason (in = kept + dropped)."""
    steps = ledger.get("steps", {})
    ordered = sorted(steps, key=lambda step: STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER))
    return [{"step": step, **steps[step]} for step in ordered]


def stats(data_dir: Path) -> dict:
    """What `polylm data stats` shows: drops by reason, tokens per language and source, stages as realized."""
    summary = load_summary(data_dir)
    tokens: Counter = Counter()
    for source in summary["sources"]:
        shards = ShardSet(data_dir / "shards" / source["name"])
        languages, inverse = np.unique(np.asarray(shards.doc_languages()), return_inverse=True)
        per_language = np.bincount(inverse, weights=shards.doc_lengths(), minlength=len(languages))
        tokens.update({str(lang): int(n) for lang, n in zip(languages, per_language, strict=True)})
    return {
        "funnel": funnel(summary["ledger"]),
        "drops": summary["ledger"]["drops"],
        "errors": summary["ledger"]["errors"],
        "read": summary["ledger"]["read"],
        "kept": summary["kept"],
        "tokens": dict(tokens),
        "tokens_per_source": {s["name"]: s["tokens"] for s in summary["sources"]},
        "stages": summary["stages"],
        "epochs": summary.get("epochs", {}),
        "fingerprint": summary["fingerprint"],
    }


def table(report: dict) -> str:
    """The report of `stats` as the lines `polylm data stats` prints."""
    lines = ["tokens per language:"]
    lines += [f"  {lang:<10}{count:>14,}" for lang, count in sorted(report["tokens"].items(), key=lambda i: -i[1])]
    lines.append("tokens per source:")
    lines += [f"  {source:<24}{count:>14,}" for source, count in report["tokens_per_source"].items()]
    lines.append("documents through each step (in, kept, dropped by reason):")
    for step in report["funnel"]:
        dropped = ", ".join(f"{reason} {count:,}" for reason, count in sorted(step["dropped"].items())) or "none"
        lines.append(f"  {step['step']:<12}{step['in']:>10,} in {step['kept']:>10,} kept   dropped: {dropped}")
    if report["errors"]:
        lines.append("input errors (file and line in data.json's error_examples):")
        lines += [f"  {kind:<24}{count:>10,}" for kind, count in sorted(report["errors"].items())]
    reused = {name: epochs for name, epochs in report["epochs"].items() if epochs > 1}
    if reused:
        lines.append("sources the curriculum reads more than once (epochs):")
        lines += [f"  {name:<24}{epochs:>10.2f}" for name, epochs in sorted(reused.items(), key=lambda i: -i[1])]
    lines.append("curriculum stages:")
    for stage in report["stages"]:
        target = stage["target_non_english_share"]
        lines.append(
            f"  {stage['name']:<10} from sample {stage['start_sample']:>8,}  {stage['samples']:>8,} samples  "
            f"non-English {100 * stage['non_english_share']:.2f}%"
            + (f" (target {100 * target:.0f}%)" if target is not None else "")
        )
    return "\n".join(lines)
