"""Training checkpoints: atomic, resumable on any engine, exportable to the Hugging Face layout.

`RUN/checkpoints/step-NNNNNNNN/` holds
- `weights/`: model and optimizer through `torch.distributed.checkpoint` (DCP). Under FSDP each rank writes its
  own shards; one process or DDP writes whole tensors. DCP reshards on load, so any engine reads any checkpoint;
- `trainer.pt`: step, tokens seen, sampler state, RNG states, world size, model config;
- `train_config.json`: the resolved config;
- `tokenizer/`: the run's tokenizer, so that a checkpoint copied anywhere exports on its own.
Everything is written into `.step-NNNNNNNN.tmp`, flushed to disk, then renamed: a save killed half-way leaves only
the hidden directory, which is never picked (and is cleared by the next save of that step).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from polylm.config import ModelConfig
from polylm.errors import PolyLMError
from polylm.model import PolyLM
from polylm.tokenizer import Tokenizer
from polylm.train.config import TrainConfig
from polylm.train.distributed import World

PREFIX = "step-"


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns on every single-process save and load that it is one; that is this engine's normal case."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a checkpoint only gets its final name once fully written)."""
    folder = run_dir / "checkpoints"
    return sorted(folder.glob(f"{PREFIX}*")) if folder.is_dir() else []


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict,
    config: TrainConfig,
    world: World,
) -> Path:
    """Collective: every rank calls it; rank 0 writes the small files and publishes the directory."""
    folder = run_dir / "checkpoints"
    final = folder / f"{PREFIX}{trainer_state['step']:08d}"
    temporary = folder / f".{final.name}.tmp"
    if world.main:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    world.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    weights = {"model": model_state, "optimizer": optimizer_state}
    with _quiet_single_process():
        dcp.save(weights, checkpoint_id=temporary / "weights", no_dist=world.size == 1)
    if world.main:
        torch.save(trainer_state, temporary / "trainer.pt")
        (temporary / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        shutil.copytree(run_dir / "tokenizer", temporary / "tokenizer")
        _fsync_tree(temporary)
        if final.exists():
            shutil.rmtree(final)
        temporary.rename(final)
        for old in list_checkpoints(run_dir)[: -config.run.keep_last]:
            shutil.rmtree(old)
    world.barrier()
    return final


def read_trainer_state(checkpoint: Path) -> dict:
    try:
        return torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise PolyLMError(f"{checkpoint}: not a training checkpoint (no trainer.pt)") from None


def load_checkpoint(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load model and optimizer in place (resharded to this run's engine); returns the trainer state."""
    trainer_state = read_trainer_state(checkpoint)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=checkpoint / "weights", no_dist=not dist.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return trainer_state


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Write a training checkpoint as the Hugging Face directory of issue A (weights, config, tokenizer).

    Runs in one process whatever engine wrote the checkpoint: DCP gathers FSDP shards into whole tensors.
    LoRA adapters are merged into the weights they adapt.
    """
    from polylm.checkpoint import save_model

    trainer_state = read_trainer_state(checkpoint)
    model: nn.Module = PolyLM(ModelConfig(**trainer_state["model_config"]))
    if trainer_state.get("lora"):
        from polylm.train.config import LoraSection
        from polylm.train.lora import add_lora, merge_lora

        model = add_lora(model, LoraSection(**trainer_state["lora"]))
    weights = {"model": model.state_dict()}
    with _quiet_single_process():
        dcp.load(weights, checkpoint_id=checkpoint / "weights", no_dist=True)
    model.load_state_dict(weights["model"])
    if trainer_state.get("lora"):
        model = merge_lora(model)
    return save_model(model, out, tokenizer=Tokenizer.from_dir(checkpoint / "tokenizer"))
