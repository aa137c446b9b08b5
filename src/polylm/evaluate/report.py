"""The output of an evaluation: one JSON document, a markdown table and a PNG bar chart per task.

JSON layout: `results[task][language][metric]` (e.g. results.xcopa.zh.acc); `averages[task][metric]` (the
mean over languages; TyDiQA's leaves out English, as its official score does); `details[task][language]` with
the item count, malformed rows set aside, source files, data fixes and sacrebleu signatures; `config`,
`versions`, `model`, `requests` and `seconds`.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # after use(): the backend is chosen first

from polylm.durable import write_json, write_text
from polylm.errors import PolyLMError

PACKAGES = ("polylm", "torch", "sentencepiece", "sacrebleu", "rouge-score", "numpy")
# Metrics in [0, 1] are shown as percentages in the table and the charts; BLEU and chrF already are.
FRACTION_METRICS = ("acc", "acc_norm", "exact_match", "f1", "rougeL")
AVERAGE_EXCLUDES = {"tydiqa": ("en",)}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def build_report(config: dict, subsets: list, scores: dict, model: dict, requests: dict, seconds: float) -> dict:
    results: dict[str, dict] = {}
    details: dict[str, dict] = {}
    for subset in subsets:
        values, signatures = scores[subset.task.name, subset.lang]
        results.setdefault(subset.task.name, {})[subset.lang] = values
        detail = {
            "samples": len(subset.docs),
            "bad_rows": len(subset.bad),
            "bad_row_examples": subset.bad.messages()[:10],
            "sources": subset.sources,
            **subset.notes,
        }
        if signatures:
            detail["signatures"] = signatures
        details.setdefault(subset.task.name, {})[subset.lang] = detail
    return {
        "results": results,
        "averages": {task: averages(task, per_lang) for task, per_lang in results.items()},
        "details": details,
        "config": config,
        "model": model,
        "requests": requests,
        "versions": versions(),
        "seconds": round(seconds, 2),
    }


def averages(task: str, per_lang: dict[str, dict[str, float]]) -> dict[str, float]:
    langs = [lang for lang in per_lang if lang not in AVERAGE_EXCLUDES.get(task, ())] or list(per_lang)
    metrics = per_lang[langs[0]]
    return {m: sum(per_lang[lang][m] for lang in langs) / len(langs) for m in metrics}


def _shown(metric: str, value: float) -> float:
    return 100 * value if metric in FRACTION_METRICS else value


def markdown(report: dict) -> str:
    """One table per task: a row per language and the average, a column per metric (percentages)."""
    sections = []
    for task, per_lang in report["results"].items():
        metrics = list(next(iter(per_lang.values())))
        lines = [f"### {task}", "", "| language | items | " + " | ".join(metrics) + " |"]
        lines.append("|---|---:|" + "---:|" * len(metrics))
        for lang, values in per_lang.items():
            cells = " | ".join(f"{_shown(m, values[m]):.2f}" for m in metrics)
            lines.append(f"| {lang} | {report['details'][task][lang]['samples']} | {cells} |")
        cells = " | ".join(f"**{_shown(m, report['averages'][task][m]):.2f}**" for m in metrics)
        lines.append(f"| average | | {cells} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def bar_chart(task: str, per_lang: dict[str, dict[str, float]], path: Path) -> None:
    languages = list(per_lang)
    metrics = list(per_lang[languages[0]])
    width = 0.8 / len(metrics)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.6 * len(languages) * len(metrics) + 2), 4))
    for k, metric in enumerate(metrics):
        positions = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(languages))]
        axis.bar(positions, [_shown(metric, per_lang[lang][metric]) for lang in languages], width, label=metric)
    axis.set_xticks(range(len(languages)), languages, rotation=45 if len(languages) > 8 else 0)
    axis.set_ylabel("score (%)" if all(m in FRACTION_METRICS for m in metrics) else "score")
    axis.set_title(f"{task} by language")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_outputs(report: dict, output: Path) -> list[Path]:
    """FILE.json, FILE.md and FILE.<task>.png; returns the paths written."""
    if output.suffix != ".json":
        raise PolyLMError(f"{output}: --output must be a .json file")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json(output, report)
    table = output.with_suffix(".md")
    write_text(table, markdown(report))
    charts = []
    for task, per_lang in report["results"].items():
        chart = output.with_suffix(f".{task}.png")
        bar_chart(task, per_lang, chart)
        charts.append(chart)
    return [output, table, *charts]
