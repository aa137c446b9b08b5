"""Bad input to `polylm evaluate`: one clear line and exit status 1, checked before the model is loaded.
A malformed row is named (FILE:LINE) and counted, and never silently shrinks the test set."""

from __future__ import annotations

import json
import shutil

import pytest

from evaluate_support import eval_model_dir, one_thread
from polylm.cli import main
from polylm.configfile import field_docs
from polylm.evaluate.config import EvalConfig
from polylm.evaluate.tasks import GROUPS, TASKS

__all__ = ["eval_model_dir", "one_thread"]  # fixtures, imported for pytest
ROWS = [
    {
        "premise": "Il cane abbaiò.",
        "choice1": "Il postino arrivò.",
        "choice2": "Pioveva.",
        "question": "cause",
        "label": 0,
        "idx": 0,
    },
    {
        "premise": "Ho aperto la finestra.",
        "choice1": "Entrò aria fresca.",
        "choice2": "Il tè si raffreddò.",
        "question": "effect",
        "label": 0,
        "idx": 1,
    },
    {
        "premise": "Era stanca.",
        "choice1": "Andò a letto.",
        "choice2": "Corse.",
        "question": "effect",
        "label": 0,
        "idx": 2,
    },
]


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "data" / "xcopa" / "it" / "test.it.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return tmp_path / "data"


def _run(capsys, model_dir, data_dir, *extra: str) -> tuple[int, str]:
    argv = ["evaluate", "--model", str(model_dir), "--tasks", "xcopa", "--languages", "it"]
    argv += ["--data-dir", str(data_dir), "--output", str(data_dir.parent / "out" / "r.json"), *extra]
    code = main(argv)
    return code, capsys.readouterr().err


def test_unknown_task(capsys, eval_model_dir, data_dir):
    code, err = _run(capsys, eval_model_dir, data_dir, "--tasks", "xcopa,xstorycloze")
    assert code == 1
    assert err.startswith("polylm: error: unknown task 'xstorycloze' in --tasks; known tasks: xnli, xcopa, pawsx")
    assert all(name in field_docs(EvalConfig)["tasks"] for name in [*TASKS, *GROUPS])  # --help lists every task


def test_missing_data_file_names_the_expected_path(capsys, eval_model_dir, data_dir):
    code, err = _run(capsys, eval_model_dir, data_dir, "--languages", "zh")
    assert code == 1
    assert f"{data_dir / 'xcopa' / 'zh' / 'test.zh.jsonl'}: XCOPA zh test file not found" in err
    code, err = _run(capsys, eval_model_dir, data_dir, "--tasks", "xwinograd", "--languages", "en")
    assert f"{data_dir / 'xwinograd' / 'en' / 'test.jsonl'} or {data_dir / 'xwinograd' / 'dataset.tsv'}" in err
    code, err = _run(capsys, eval_model_dir, data_dir.parent / "nowhere")
    assert code == 1 and "nowhere: data directory not found" in err
    code, err = _run(capsys, eval_model_dir, data_dir, "--languages", "xx")
    assert code == 1 and "task 'xcopa' has none of --languages xx" in err


def test_malformed_rows_fail_unless_skipped_and_are_counted(capsys, tmp_path, eval_model_dir, data_dir):
    path = data_dir / "xcopa" / "it" / "test.it.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    broken = {**ROWS[1], "label": 7}
    del broken["premise"]
    path.write_text("\n".join([lines[0], '{"premise": "Troncato', json.dumps(broken), *lines[1:]]) + "\n")
    code, err = _run(capsys, eval_model_dir, data_dir)
    assert code == 1
    assert err.count("\n") == 1  # one line
    assert f"polylm: error: {path}:2: not valid JSON" in err
    assert "2 malformed rows in all (xcopa it: 2)" in err and "--skip-bad-rows" in err

    code, err = _run(capsys, eval_model_dir, data_dir, "--skip-bad-rows")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "r.json").read_text(encoding="utf-8"))
    details = report["details"]["xcopa"]["it"]
    assert details["samples"] == 3 and details["bad_rows"] == 2
    assert details["bad_row_examples"] == [
        f"{path}:2: not valid JSON (Unterminated string starting at)",
        f"{path}:3: field 'premise' is missing, not a string",
    ]


def test_model_without_tokenizer(capsys, tmp_path, eval_model_dir, data_dir):
    bare = tmp_path / "bare-model"
    shutil.copytree(eval_model_dir, bare)
    (bare / "tokenizer.model").unlink()
    code, err = _run(capsys, bare, data_dir)
    assert code == 1
    expected = f"{bare}: no tokenizer.model; evaluation needs the model's SentencePiece tokenizer in its directory"
    assert err == f"polylm: error: {expected}\n"
    code, err = _run(capsys, tmp_path / "no-model", data_dir)
    assert code == 1 and "no-model: model directory not found" in err


def test_output_must_be_json(capsys, eval_model_dir, data_dir):
    code = main(
        [
            "evaluate",
            "--model",
            str(eval_model_dir),
            "--tasks",
            "xcopa",
            "--data-dir",
            str(data_dir),
            "--output",
            str(data_dir / "r.txt"),
        ]
    )
    assert code == 1 and "--output must name a .json file" in capsys.readouterr().err


def test_language_without_items(capsys, eval_model_dir, data_dir):
    path = data_dir / "tydiqa" / "goldp-dev.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"id": "arabic-1", "context": "c", "question": "q", "answers": {"text": ["a"]}}) + "\n")
    code, err = _run(capsys, eval_model_dir, data_dir, "--tasks", "tydiqa", "--languages", "ar,en")
    assert code == 1 and f"{path}: no tydiqa items for en" in err
