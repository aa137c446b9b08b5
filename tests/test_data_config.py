"""The data config file: clear errors for bad keys, and a small run on text the project ships."""

from __future__ import annotations

import json

import pytest

from conftest import EMBEDDED_CORPUS
from polylm.cli import main
from polylm.data.prepare import load_config
from polylm.errors import PolyLMError


def _write(tmp_path, text: str):
    path = tmp_path / "data.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pipeline: {}\n", "sources: needs a list of sources"),
        (
            "sources: [{name: a, lang: en, paths: [x.txt]}]\nworker: 2\n",
            "data.yaml: worker: unknown key (known: sources, pipeline",
        ),
        ("sources: [{name: a, lang: en, paths: [x.txt], colour: red}]\n", "data.yaml: sources[0].colour: unknown key"),
        ("sources: [{name: a}]\n", "source 'a' needs either lang + paths or parallel"),
        ("sources: [{name: a, parallel: [{src: x}]}]\n", "data.yaml: sources[0].parallel[0].src: unknown key"),
        ("sources: [{name: a, lang: en, paths: [x]}, {name: a, lang: de, paths: [y]}]\n", "must be unique"),
        (
            "sources: [{name: a, lang: en, paths: [x]}]\npipeline: {minhash: 0.5}\n",
            "data.yaml: pipeline.minhash: unknown key",
        ),
        ("sources: [\n", "not valid YAML"),
        ("sources: [{name: a, lang: en, paths: [x]}]\nworkers: two\n", "workers: expected int, got 'two'"),
        (
            "sources: [{name: a, lang: en, paths: [x]}]\ncurriculum: {seq_len: 2048.5}\n",
            "curriculum.seq_len: expected int",
        ),
        ("sources: [{name: a, lang: en, paths: [x]}]\npipeline: {minhash_threshold: high}\n", "expected a number"),
        (
            "sources: [{name: a, lang: en, paths: [x]}]\npipeline: {quality: {min_wordz: 3}}\n",
            "data.yaml: pipeline.quality.min_wordz: unknown key",
        ),
        (
            "sources: [{name: a, lang: en, paths: [x]}]\ncurriculum: {stages: [{name: s, tokens: 5, share: 1}]}\n",
            "data.yaml: curriculum.stages[0].share: unknown key",
        ),
        ("sources: [{name: a, parallel: [{tsv: [x]}]}]\n", "data.yaml: sources[0].parallel[0].tsv: expected str"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(PolyLMError) as error:
        load_config(_write(tmp_path, text))
    assert message in str(error.value) and str(tmp_path / "data.yaml") in str(error.value)


def test_prepare_on_the_embedded_corpus(tmp_path, capsys):
    """Two sources of one language feed one tokenizer input; every document is accounted for."""
    extra = tmp_path / "more-en.txt"
    extra.write_text("A second English source, written for this test, about lighthouses and tides.\n" * 3)
    config = _write(
        tmp_path,
        f"""
sources:
  - {{name: corpus-en, lang: en, paths: ["{EMBEDDED_CORPUS / "en.txt"}"]}}
  - {{name: more-en, lang: en, paths: ["{extra}"]}}
  - {{name: corpus-de, lang: de, paths: ["{EMBEDDED_CORPUS / "de.txt"}"]}}
  - name: pairs
    parallel: [{{src_file: "{EMBEDDED_CORPUS / "ja.txt"}", tgt_file: "{EMBEDDED_CORPUS / "en.txt"}",
                 src_lang: ja, tgt_lang: en}}]
pipeline: {{rejects: true}}
tokenizer: {{vocab_size: 1200}}
curriculum: {{total_tokens: 20000, switch_fraction: 0.5, seq_len: 64}}
""",
    )
    out = tmp_path / "out"
    assert main(["data", "prepare", "--config", str(config), "--out", str(out)]) == 0
    summary = json.loads((out / "data.json").read_text())
    read, kept = summary["ledger"]["read"], summary["kept"]
    assert read["corpus-en"] == 60 and read["more-en"] == 3 and read["pairs"] == 60
    assert kept["more-en"] == 1  # the two repeats are exact duplicates
    assert kept["pairs"] == 30  # 60 pairs, 4 per document, both directions: 15 groups x 2
    monolingual = ("corpus-en", "more-en", "corpus-de")
    assert sum(summary["ledger"]["drops"].values()) == sum(read[s] - kept[s] for s in monolingual)
    training = json.loads((out / "tokenizer" / "tokenizer_training.json").read_text())
    lines = {entry["path"].rsplit("/", 1)[-1]: entry["lines"] for entry in training["inputs"]}
    assert lines == {"de.txt": kept["corpus-de"], "en.txt": kept["corpus-en"] + kept["more-en"]}
