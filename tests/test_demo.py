"""`polylm demo`: the embedded corpus, the whole recipe with its report, Ctrl-C then resume, the ablation's table."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from polylm.data.documents import POLYLM_LANGUAGES
from polylm.demo import corpus
from polylm.demo.ablation import _write


def test_embedded_corpus_covers_polylm_languages_with_held_out_lines():
    assert corpus.languages() == sorted(POLYLM_LANGUAGES)
    size = sum(p.stat().st_size for p in corpus.RESOURCES.rglob("*") if p.is_file())
    assert size < 3_000_000
    held_out = {lang: set(corpus.held_out_lines(lang)) for lang in corpus.languages()}
    for lang in corpus.languages():
        records = [json.loads(line) for line in (corpus.INSTRUCTIONS / f"{lang}.jsonl").read_text().splitlines()]
        assert len(records) >= 5 and all(r["instruction"] and r["output"] for r in records)
        for record in records:  # instructions are built from training lines only
            assert not ({record["input"], record["output"]} & set().union(*held_out.values()))


def _demo(out, *extra):
    """`polylm demo` run from the run directory's parent with a relative --out, as a user types it."""
    command = [sys.executable, "-m", "polylm.cli", "demo", "--out", out.name, "--minutes", "0.4", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=out.parent,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip


@pytest.mark.slow
def test_demo_interrupted_then_resumed_writes_a_report(tmp_path):
    out, no_benchmarks = tmp_path / "demo", tmp_path / "empty"
    no_benchmarks.mkdir()
    first = _demo(out, "--data-dir", str(no_benchmarks))
    metrics = out / "pretrain" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)  # Ctrl-C in the middle of pretraining
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 130, output[-3000:]
    assert "rerun the same command to resume" in output
    assert (out / "stages" / "data.done").exists() and not (out / "stages" / "pretrain.done").exists()
    interrupted_at = len(metrics.read_text().splitlines())

    second = _demo(out, "--data-dir", str(no_benchmarks))
    output, _ = second.communicate(timeout=900)
    assert second.returncode == 0, output[-3000:]
    assert "== data: done before, skipped" in output
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= interrupted_at  # resumed, not restarted

    report = (out / "report.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"pretrain/plots/loss_by_language.png", "pretrain/plots/language_mix.png"} <= set(images)
    for relative in images:
        assert not relative.startswith("/")
        with Image.open(out / relative) as image:
            assert image.format == "PNG" and image.size[0] > 100
    for section in ("Held-out loss per language", "response loss", "flores", "Resolved configs"):
        assert section in report
    translation = json.loads((out / "eval" / "translation.json").read_text())
    assert len(translation["results"]["flores"]) == 34
    samples = json.loads((out / "samples.json").read_text())
    assert [s["lang"] for s in samples] == ["en", "zh", "es", "ar", "ja", "th", "ru"]


def test_ablation_report_states_what_it_measured(tmp_path):
    finals = {
        "curriculum": [{"en": 5.0, "zh": 6.0, "th": 6.5}, {"en": 5.2, "zh": 6.2, "th": 6.3}],
        "flat": [{"en": 4.9, "zh": 6.4, "th": 6.6}, {"en": 5.1, "zh": 6.6, "th": 6.6}],
    }
    text = _write(tmp_path, finals, seeds=2, steps=10).read_text()
    assert "| zh | 6.100 ± 0.141 | 6.500 ± 0.141 | -0.400 |" in text
    assert "lower in 2 of 2 languages" in text and "English: +0.100" in text
    assert json.loads((tmp_path / "results.json").read_text())["deltas"]["en"] == pytest.approx(0.1)
