"""The trainer's numbers do not move under refactoring: a 40-step tiny pretrain and a 20-step finetune give the
per-step losses recorded from the code before the refactor (tests/fixtures/trainer_losses.json), bit for bit.

Floating-point sums depend on the CPU's vector width and the thread count, so the comparison runs where the
recording was made (same CPU model, thread count and torch version) and skips elsewhere, saying so. Record
again with `POLYLM_RECORD_LOSSES=1 pytest tests/test_trainer_regression.py` when a change is meant to move them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, SHARED_DATA
from polylm.cli import main
from polylm.config import preset
from polylm.hf_checkpoint import save_model
from polylm.model import build_model
from polylm.tokenizer import Tokenizer
from train_support import config_file, losses, prepare_train_data

RECORD = os.environ.get("POLYLM_RECORD_LOSSES") == "1"
FIXTURE = Path(__file__).parent / "fixtures" / "trainer_losses.json"
MULTIALPACA = SHARED_DATA / "instructions" / "multialpaca"
pytestmark = pytest.mark.filterwarnings("ignore:curriculum. source")


def _machine() -> dict:
    sys.path.insert(0, str(REPO / "bench"))
    from _machine import cpu_model

    return {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def _pretrain(tmp_path, data_dir) -> list[float]:
    config = str(config_file(tmp_path, data_dir, max_steps=40, checkpoint_every=20))
    assert main(["pretrain", "--config", config, "--out", str(tmp_path / "pretrain")]) == 0
    return losses(tmp_path / "pretrain")


def _finetune(tmp_path, data_dir) -> list[float]:
    tokenizer = Tokenizer.from_dir(data_dir / "tokenizer")
    shape = dict(vocab_size=tokenizer.vocab_size, num_layers=2, hidden_size=64, num_heads=4,
                 max_position_embeddings=256)  # fmt: skip
    base = save_model(build_model(preset("tiny").replace(**shape), seed=3), tmp_path / "base", tokenizer=tokenizer)
    sources = ",".join(f'{{name: {lang}, format: alpaca, max_records: 200, paths: [{{path: '
                       f'"{MULTIALPACA}/{lang}.jsonl", lang: {lang}}}]}}' for lang in ("es", "ja"))  # fmt: skip
    (tmp_path / "mix.yaml").write_text(f"sources: [{sources}]\nvalidation_fraction: 0.1\nlanguage_id: false\n")
    data = tmp_path / "instructions"
    assert main(["instruct", "prepare", "--config", str(tmp_path / "mix.yaml"), "--out", str(data)]) == 0
    config = tmp_path / "finetune.yaml"
    config.write_text(json.dumps({
        "model": {"path": str(base)}, "data": str(data),
        "sft": {"template": "multialpaca", "seq_len": 256, "packing": True, "epochs": 3},
        "batch": {"global_tokens": 2048, "micro_batch": 8}, "optim": {"lr": 3e-3, "warmup_steps": 3},
        "run": {"max_steps": 20, "checkpoint_every": 10, "eval_every": 10, "eval_tokens": 2000},
    }))  # fmt: skip
    assert main(["finetune", "--config", str(config), "--out", str(tmp_path / "finetune")]) == 0
    return losses(tmp_path / "finetune")


@pytest.mark.slow
@pytest.mark.skipif(not MULTIALPACA.is_dir(), reason=f"{MULTIALPACA} is absent")
def test_pretrain_and_finetune_losses_equal_the_recording(tmp_path):
    machine = _machine()
    recorded = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else None
    if not RECORD and (recorded is None or recorded["machine"] != machine):
        pytest.skip(f"the recording was made on {recorded and recorded['machine']}, this is {machine}")
    data_dir = prepare_train_data(tmp_path)
    got = {"pretrain": _pretrain(tmp_path, data_dir), "finetune": _finetune(tmp_path, data_dir)}
    assert len(got["pretrain"]) == 40 and len(got["finetune"]) == 20
    if RECORD:
        FIXTURE.write_text(json.dumps({"machine": machine, **got}, indent=1) + "\n")
        return
    assert got["pretrain"] == recorded["pretrain"]
    assert got["finetune"] == recorded["finetune"]
