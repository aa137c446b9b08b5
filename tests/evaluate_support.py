"""Shared pieces of the evaluation tests: a tiny model directory and the staged benchmark data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA, TINY, random_model
from polylm.hf_checkpoint import save_model
from polylm.tokenizer import Tokenizer

BENCHMARKS = SHARED_DATA / "benchmarks"
needs_benchmarks = pytest.mark.skipif(
    not BENCHMARKS.is_dir(), reason=f"{BENCHMARKS} is absent: the staged benchmark data is not on this machine"
)


@pytest.fixture(scope="session")
def eval_model_dir(tmp_path_factory: pytest.TempPathFactory, corpus_tokenizer: Tokenizer) -> Path:
    """A random tiny PolyLM in the Hugging Face layout, with the corpus tokenizer, 512 positions."""
    config = TINY.replace(vocab_size=corpus_tokenizer.vocab_size, max_position_embeddings=512)
    return save_model(random_model(config, seed=1), tmp_path_factory.mktemp("eval-model"), tokenizer=corpus_tokenizer)


@pytest.fixture(autouse=True)
def one_thread():
    """Run the tiny models on one thread: faster at this size, and on a busy 2-core machine two OpenMP threads
    spin-wait on each other and run 100x slower. (Autouse in the modules that import it.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def harness_task_yaml(tasks_dir: Path, name: str, include: str, data: Path, extra: str = "") -> None:
    """An lm-eval task YAML that takes the harness's own task definition (`include`) over a local JSONL file."""
    (tasks_dir / f"{name}.yaml").write_text(
        f"include: {include}\ntask: {name}\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        f"training_split: null\nvalidation_split: null\ntest_split: test\n{extra}",
        encoding="utf-8",
    )
