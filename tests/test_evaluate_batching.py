"""Batch size does not change scores (log-likelihood and generation tasks), and the command writes its JSON,
markdown table and charts from the staged data directory as it is."""

from __future__ import annotations

import json

import pytest
from tqdm import tqdm

from evaluate_support import BENCHMARKS, eval_model_dir, needs_benchmarks, one_thread
from polylm.cli import main
from polylm.evaluate import EvalConfig, evaluate
from polylm.evaluate.language_model import LanguageModel, cut_at_stop
from polylm.evaluate.runner import build_prompts, load_language_model, load_subsets

__all__ = ["eval_model_dir", "one_thread"]  # fixtures, imported for pytest
pytestmark = [pytest.mark.slow, needs_benchmarks]
TASKS = "xcopa,xwinograd,xquad,wmt20"
LANGUAGES = "zh,th,en-de"


def _config(model_dir, batch_size: int, **changes) -> EvalConfig:
    return EvalConfig(
        model=str(model_dir),
        tasks=TASKS.split(","),
        languages=LANGUAGES.split(","),
        data_dir=str(BENCHMARKS),
        limit=12,
        batch_size=batch_size,
        max_new_tokens=6,
        **changes,
    )


def test_cli_outputs_and_batch_size_independence(tmp_path, capsys, eval_model_dir):
    output = tmp_path / "out" / "results.json"
    argv = ["evaluate", "--model", str(eval_model_dir), "--tasks", TASKS, "--languages", LANGUAGES]
    argv += ["--data-dir", str(BENCHMARKS), "--limit", "12", "--batch-size", "8", "--max-new-tokens", "6"]
    assert main([*argv, "--output", str(output)]) == 0
    printed = capsys.readouterr()
    assert "### xcopa" in printed.out and "evaluating" in printed.err  # the table, and a progress bar
    report = json.loads(output.read_text(encoding="utf-8"))
    results = report["results"]
    assert set(results) == {"xcopa", "xwinograd", "xquad", "wmt20"}
    assert set(results["xcopa"]) == {"zh", "th"} and set(results["xwinograd"]) == {"zh"}
    assert set(results["wmt20"]) == {"en-de", "en-zh", "zh-en"}  # zh picks every zh direction; en-de by name
    assert 0 <= results["xcopa"]["zh"]["acc"] <= 1
    assert report["details"]["wmt20"]["en-zh"]["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:zh")
    assert report["details"]["xcopa"]["th"]["questions_fixed"] == 250
    assert report["config"]["batch_size"] == 8 and report["versions"]["sacrebleu"]
    assert report["requests"] == {"loglikelihood": 2 * (12 + 12) + 2 * 12, "generate_until": 2 * 12 + 3 * 12}
    table = output.with_suffix(".md").read_text(encoding="utf-8")
    assert "| language | items | acc | acc_norm |" in table and "| zh-en | 12 |" in table
    for task in results:
        assert output.with_suffix(f".{task}.png").read_bytes().startswith(b"\x89PNG")

    one = evaluate(_config(eval_model_dir, batch_size=1))
    assert one["results"] == results  # every task, language and metric, exactly
    print("\nbatch 1 == batch 8:", json.dumps(results["xcopa"]), json.dumps(results["wmt20"]["en-de"]))


def test_loglikelihoods_and_generations_across_batch_sizes(eval_model_dir):
    config = _config(eval_model_dir, batch_size=1)
    subsets = load_subsets(config)
    build_prompts(subsets, 0, config.seed)
    lm = load_language_model(config)
    pairs = [pair for s in subsets if s.task.name in ("xcopa", "xwinograd") for p in s.prompts for pair in p]
    prompts = [p for s in subsets if s.task.name == "xquad" for p in s.prompts]
    from polylm.generate import GenerationConfig

    greedy = GenerationConfig(max_new_tokens=6, eos_token_id=lm.tokenizer.eos_id)
    beams = greedy.replace(num_beams=3, early_stopping=True)
    runs = {}
    for batch_size in (1, 3, 8):
        other = LanguageModel(lm.model, lm.tokenizer, batch_size, lm.prefix_token_id)
        off = tqdm(disable=True)
        runs[batch_size] = (
            other.loglikelihood(pairs, off),
            other.generate_until(prompts, ["\n"], greedy, off),
            other.generate_until(prompts, ["\n"], beams, off),
        )
    for batch_size in (3, 8):
        assert runs[batch_size][0] == pytest.approx(runs[1][0], rel=1e-6, abs=1e-5)
        assert runs[batch_size][1:] == runs[1][1:]


def test_few_shot_prompts_are_fixed_by_the_seed(eval_model_dir):
    config = _config(eval_model_dir, batch_size=8, num_fewshot=2)
    prompts = []
    for _ in range(2):
        subsets = load_subsets(config)
        build_prompts(subsets, 2, config.seed)
        prompts.append([s.prompts for s in subsets])
    assert prompts[0] == prompts[1]
    xcopa_zh = next(s for s in subsets if (s.task.name, s.lang) == ("xcopa", "zh"))
    context = xcopa_zh.prompts[0][0][0]
    assert context.count("\n\n") == 2 and context.endswith("该物品用气泡包装纸包着 因为")  # 2 examples from val
    wmt = next(s for s in subsets if s.task.name == "wmt20")
    assert wmt.prompts[0].count("Translate this sentence from") == 3  # 2 examples + the item, test item excluded


def test_cut_at_stop():
    assert cut_at_stop("\n 北京是首都。\n第二行", ["\n"]) == "北京是首都。"
    assert cut_at_stop(" Paris", ["\n"]) == "Paris"
    assert cut_at_stop("a. b", [".", "\n"]) == "a"
