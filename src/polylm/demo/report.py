"""`RUN/report.md`: what the demo did and measured, with its plots linked by relative path and every resolved config."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

import polylm


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def _image(out: Path, relative: str, title: str) -> str:
    return f"![{title}]({relative})\n" if (out / relative).is_file() else f"({title}: not produced)\n"


def _before_after(records: list[dict], what: str) -> str:
    if len(records) < 2:
        return f"No {what} records.\n"
    before, after = records[0]["loss_by_lang"], records[-1]["loss_by_lang"]
    rows = [f"| language | {what} at step {records[0]['step']} | at step {records[-1]['step']} | change |",
            "|---|---|---|---|"]  # fmt: skip
    for lang in sorted(after):
        if lang in before:
            rows.append(f"| {lang} | {before[lang]:.3f} | {after[lang]:.3f} | {after[lang] - before[lang]:+.3f} |")
    return "\n".join(rows) + "\n"


def _details(title: str, path: Path, key: str | None = None) -> str:
    if not path.is_file():
        return ""
    data = json.loads(path.read_text(encoding="utf-8"))
    body = json.dumps(data[key] if key else data, indent=2, ensure_ascii=False)
    return f"<details><summary>{title} (<code>{path.name}</code>)</summary>\n\n```json\n{body}\n```\n</details>\n\n"


def write_report(out: Path) -> Path:
    stages = sorted((out / "stages").glob("*.done"), key=lambda p: p.stat().st_mtime)
    seconds = {p.stem: json.loads(p.read_text())["seconds"] for p in stages}
    parts = [
        "# polylm demo: the PolyLM recipe at tiny scale\n",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · polylm {polylm.__version__} · torch {torch.__version__} · "
        f"{platform.machine()}, {torch.get_num_threads()} threads · stage time {sum(seconds.values()) / 60:.1f} min\n",
        "Tokenizer, bilingual data and the 30% → 60% non-English curriculum (`polylm data prepare`), pretraining the "
        "`tiny` preset, MultiAlpaca-style instruction tuning, evaluation and generation, each through its own "
        "`polylm` verb on the embedded 18-language corpus. At this scale the numbers show that the pipeline works "
        "end to end, not what PolyLM-13B can do.\n",
        "| stage | seconds |\n|---|---|\n" + "".join(f"| {k} | {v:.0f} |\n" for k, v in seconds.items()),
        "## Pretraining\n",
        _image(out, "pretrain/plots/loss_by_language.png", "training and validation loss per language"),
        _image(out, "pretrain/plots/language_mix.png", "realized language mix, curriculum stage switch marked"),
        "Held-out loss per language (perplexity = e^loss; the last 10% of each language's documents):\n",
        _before_after(_jsonl(out / "pretrain" / "validation.jsonl"), "loss"),
        "## Instruction tuning (`multialpaca` template)\n",
        _image(out, "finetune/plots/loss_by_language.png", "response loss per language"),
        "Held-out response loss per language:\n",
        _before_after(_jsonl(out / "finetune" / "validation.jsonl"), "response loss"),
        "## Evaluation of the pretrained model\n",
        "Translation of the 6 held-out sentences of every language, both directions, with PolyLM's prompt:\n",
    ]
    for name in ("translation", "xcopa"):
        table = out / "eval" / f"{name}.md"
        if table.is_file():
            parts.append(table.read_text(encoding="utf-8") + "\n")
            parts += [_image(out, f"eval/{p.name}", p.stem) for p in sorted((out / "eval").glob(f"{name}.*.png"))]
    samples = out / "samples.json"
    if samples.is_file():
        parts.append("## Samples from the tuned model (greedy, held-out inputs)\n")
        for record in json.loads(samples.read_text(encoding="utf-8")):
            text = record["output"].get("text", record["output"]) if isinstance(record["output"], dict) else ""
            parts.append(
                f"**{record['lang']}** · prompt:\n\n```\n{record['prompt']}\n```\n\noutput:\n\n```\n{text}\n```\n"
            )
    parts += [
        "## Resolved configs\n",
        _details("data prepare", out / "data" / "data.json", "config"),
        _details("pretrain", out / "pretrain" / "train_config.json"),
        _details("instruct prepare", out / "instruct" / "mixture.json"),
        _details("finetune", out / "finetune" / "train_config.json"),
        _details("evaluate (translation)", out / "eval" / "translation.json", "config"),
        _details("evaluate (xcopa)", out / "eval" / "xcopa.json", "config"),
    ]
    path = out / "report.md"
    path.write_text("\n".join(part for part in parts if part), encoding="utf-8")
    return path
