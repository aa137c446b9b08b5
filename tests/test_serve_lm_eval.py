"""lm-evaluation-harness scores XCOPA through `polylm serve` (its `local-completions` model, echo + logprobs) with
the same accuracy per language as `polylm evaluate` in process on the same model directory."""

from __future__ import annotations

import os

import pytest

from evaluate_support import BENCHMARKS, eval_model_dir, harness_task_yaml, needs_benchmarks, one_thread, write_jsonl
from polylm.evaluate import EvalConfig, evaluate
from polylm.evaluate.data import BadRows
from polylm.evaluate.tasks.xcopa import fix_questions, read_items, xcopa_path
from serve_support import start_cli_server, stop

pytestmark = [pytest.mark.slow, needs_benchmarks]
lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("tenacity", reason="lm-eval's API models need lm-eval[api]")

LANGUAGES = ["id", "it", "zh"]
LIMIT = 40
__all__ = ["eval_model_dir", "one_thread"]  # fixtures, imported for pytest


def test_xcopa_through_http_equals_in_process(tmp_path, eval_model_dir, monkeypatch):
    from lm_eval.tasks import TaskManager

    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    harness_tasks = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    (tmp_path / "tasks").mkdir()
    names = {}
    for lang in LANGUAGES:
        items = read_items(xcopa_path(BENCHMARKS, lang, "test"), BadRows())
        fix_questions(items, BENCHMARKS, lang, "test")  # the harness reads the items we score, fixed alike
        write_jsonl(tmp_path / f"xcopa_{lang}.jsonl", items)
        names[lang] = f"local_xcopa_{lang}"
        harness_task_yaml(tmp_path / "tasks", names[lang], f"{harness_tasks}/xcopa/default_{lang}.yaml",
                          tmp_path / f"xcopa_{lang}.jsonl", "metric_list:\n  - metric: acc\n")  # fmt: skip

    process, url = start_cli_server(eval_model_dir, "--served-model-name", "tiny")
    try:
        harness = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"base_url={url}/v1/completions,model=tiny,max_length=512,num_concurrent=4",
            tasks=list(names.values()),
            task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
            limit=LIMIT,
        )
    finally:
        stop(process)
    config = EvalConfig(model=str(eval_model_dir), tasks=["xcopa"], languages=LANGUAGES, data_dir=str(BENCHMARKS),
                        limit=LIMIT)  # fmt: skip
    ours = evaluate(config)["results"]["xcopa"]
    print("\nlang  in-process acc  lm-eval over HTTP acc")
    for lang, name in names.items():
        print(f"{lang:5} {ours[lang]['acc']:14.4f} {harness['results'][name]['acc,none']:22.4f}")
        assert ours[lang]["acc"] == harness["results"][name]["acc,none"], lang
