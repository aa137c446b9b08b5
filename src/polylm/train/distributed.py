"""Where the model runs and how it is split: the process group, the device, and the engine wrapped around the model.

The model (`polylm.model`) knows nothing of this. `parallelize` applies, in torchtitan's order, activation
checkpointing per block, `torch.compile` per block, then DDP or FSDP2 (`fully_shard` per block, then the root,
which holds the tied embedding). Under FSDP a model is built on the meta device, sharded, and only then given
memory and values: fresh ones (`materialize`) or each rank's rows of a Hugging Face directory (`load_sharded`), so
no rank ever holds the whole model.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from polylm.errors import PolyLMError
from polylm.model import PolyLM
from polylm.train.config import ParallelSection


@dataclass
class World:
    """This process's place under torchrun (rank 0 of 1 without it) and the device it computes on."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def pick_device(requested: str) -> torch.device:
    """`auto`: this rank's GPU (LOCAL_RANK) when CUDA is there, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise PolyLMError("train config: run.device is cuda but torch sees no GPU")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def join_world(device: str = "auto") -> World:
    """Join torchrun's process group when WORLD_SIZE > 1: NCCL on GPUs, gloo on CPU."""
    where = pick_device(device)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(device=where)
    if not dist.is_initialized():
        on_gpu = where.type == "cuda"
        dist.init_process_group("nccl" if on_gpu else "gloo", device_id=where if on_gpu else None)
    return World(dist.get_rank(), dist.get_world_size(), where)


def resolve_engine(engine: str, world: World) -> str:
    """`auto` is DDP under torchrun and a single process otherwise; FSDP is always asked for by name."""
    if engine == "auto":
        return "ddp" if world.size > 1 else "single"
    if engine == "single" and world.size > 1:
        raise PolyLMError(f"train config: parallel.engine single cannot run on {world.size} ranks; use ddp or fsdp")
    if engine != "single" and world.size == 1:
        raise PolyLMError(f"train config: parallel.engine {engine} needs torchrun with more than one process")
    return engine


def parallelize(model: PolyLM, engine: str, parallel: ParallelSection, precision: str, world: World) -> nn.Module:
    """Wrap `model` for training in place; returns the module to call for forward/backward.

    Under FSDP with bf16, parameters are all-gathered in bf16 and gradients reduced in fp32
    (`MixedPrecisionPolicy`); the sharded fp32 parameters stay the optimizer's master weights.
    """
    for index, block in enumerate(model.h):
        if parallel.activation_checkpointing:
            block = checkpoint_wrapper(block, preserve_rng_state=False)
        if parallel.compile:
            block.compile()
        model.h[index] = block
    if engine == "fsdp":
        policy = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if precision == "bf16" else None,
            reduce_dtype=torch.float32 if precision == "bf16" else None,
        )
        for block in model.h:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    if engine == "ddp":
        return DistributedDataParallel(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    return model


def _rows_held(param: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """This rank's rows of a parameter: FSDP2 shards dim 0 in `torch.chunk` pieces (the last ones may be short)."""
    if not isinstance(param, DTensor):
        return param.data, 0, param.shape[0]
    local = param.to_local()
    rows, ranks = param.shape[0], param.device_mesh.size()
    first = min(param.device_mesh.get_local_rank() * -(-rows // ranks), rows)
    return local, first, first + local.shape[0]


def materialize(model: PolyLM, seed: int, device: torch.device) -> None:
    """Give a model built on the meta device and sharded by `parallelize` its memory and its initial values:
    each rank allocates and fills only its own shards, with exactly the values `build_model(seed)` gives the
    whole model in one process (torchtitan's order: meta build, shard, then materialize)."""
    model.to_empty(device=device)
    model.init_weights(torch.Generator().manual_seed(seed), rows_held=_rows_held)


def load_sharded(model: PolyLM, model_dir: Path, device: torch.device) -> None:
    """Give a model built on the meta device and sharded by `parallelize` the weights of a Hugging Face directory:
    each rank reads only its own rows of each tensor (a transposed Conv1D weight is read whole, one at a time), so
    no rank ever holds the whole model."""
    from polylm.hf_checkpoint import Scratch, stored_tensors

    model.to_empty(device=device)
    parameters = dict(model.named_parameters())
    scratch = Scratch()
    with torch.no_grad():
        for tensor in stored_tensors(model_dir, {name: tuple(p.shape) for name, p in parameters.items()}):
            local, first, end = _rows_held(parameters[tensor.name])
            tensor.copy_to(local, scratch, rows=(first, end))


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Scale the gradients to a global L2 norm of at most `max_norm` (`clip_grad_norm_`'s rule); the norm before.

    Each tensor's norm is summed in float64, then over the ranks' shards. torch's fp32 norm of one large tensor
    drifts (7e-5 relative for a 256,000 x 1024 embedding gradient) and drifts differently on each shard, so FSDP's
    step would be clipped differently from one process's, and AdamW moves every weight whose gradient is near eps
    by that difference: at hidden 5120 the two runs' losses parted by 4e-4 by step 4.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    # FSDP2 shards every parameter (dim 0), so each rank's squares are its rows' share of the whole.
    local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
    squares = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in local]).square().sum()
    if isinstance(grads[0], DTensor):
        dist.all_reduce(squares)
    norm = squares.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(local, scale.to(local[0].dtype))
    return float(norm)


def sync_gradients(network: nn.Module, last_micro_batch: bool) -> AbstractContextManager:
    """Context for one micro batch: gradients are reduced across ranks only on the last one."""
    if isinstance(network, DistributedDataParallel) and not last_micro_batch:
        return network.no_sync()
    if isinstance(network, FSDPModule):
        network.set_requires_gradient_sync(last_micro_batch)
    return nullcontext()
