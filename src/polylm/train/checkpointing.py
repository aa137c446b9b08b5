"""Training checkpoints: atomic, resumable on any engine, exportable to the Hugging Face layout.

`RUN/checkpoints/step-NNNNNNNN/` holds
- `weights/`: model and optimizer through `torch.distributed.checkpoint` (DCP). Under FSDP each rank writes its
  own shards; one process or DDP writes whole tensors. DCP reshards on load, so any engine reads any checkpoint;
- `trainer.pt`: step, tokens seen, sampler state, RNG states, world size, model config;
- `train_config.json`: the resolved config;
- `tokenizer/`: the run's tokenizer, so that a checkpoint copied anywhere exports on its own.
Everything is written into `.step-NNNNNNNN.tmp`, fsynced (files and directories), then renamed into place and the
folder fsynced (`polylm.durable`): a save killed half-way leaves only the hidden directory, which is never picked
(and is cleared by the next save of that step). A same-step checkpoint being replaced is moved aside, not deleted
first, and rotated-out checkpoints are hidden before they are removed, so every `step-*` name is a whole one.
"""

from __future__ import annotations

import json
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
from polylm.durable import remove_dir, replace_dir, sync_tree
from polylm.errors import PolyLMError
from polylm.model import PolyLM
from polylm.tokenizer import Tokenizer
from polylm.train.config import TrainConfig
from polylm.train.distributed import World

PREFIX = "step-"
_EARLIER = "remove this checkpoint directory to resume from the one before it"


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
        sync_tree(temporary)
        replace_dir(temporary, final)
        for old in list_checkpoints(run_dir)[: -config.run.keep_last]:
            remove_dir(old)
    world.barrier()
    return final


def read_trainer_state(checkpoint: Path) -> dict:
    path = checkpoint / "trainer.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise PolyLMError(f"{checkpoint}: not a training checkpoint (no trainer.pt)") from None
    except Exception as exc:  # torch.load fails in many ways on a damaged file (pickle, zip, EOF)
        raise PolyLMError(f"{path}: damaged, cannot be read ({type(exc).__name__}); {_EARLIER}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise PolyLMError(f"{path}: damaged, not a trainer state; {_EARLIER}")
    return state


def load_checkpoint(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load model and optimizer in place (resharded to this run's engine); returns the trainer state."""
    trainer_state = read_trainer_state(checkpoint)
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    try:
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=checkpoint / "weights", no_dist=not dist.is_initialized())
    except Exception as exc:  # a damaged or missing shard file: DCP's own exception types vary
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise PolyLMError(f"{checkpoint / 'weights'}: cannot be read ({first}); {_EARLIER}") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return trainer_state


def export_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Write a training checkpoint as the Hugging Face directory of issue A (weights, config, tokenizer).

    Runs in one process whatever engine wrote the checkpoint: DCP gathers FSDP shards into whole tensors.
    LoRA adapters are merged into the weights they adapt.
    """
    from polylm.hf_checkpoint import save_model

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


def as_model_dir(source: str, scratch: Path) -> Path:
    """A Hugging Face directory for `source`: a training checkpoint (RUN/checkpoints/step-N) exported into
    `scratch`, else a model directory or hub id as `polylm.hub` resolves it."""
    if (Path(source) / "trainer.pt").is_file():
        return export_checkpoint(Path(source), scratch / "model")
    from polylm.hub import resolve_model_dir

    return resolve_model_dir(source)
