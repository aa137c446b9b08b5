"""Pretraining on the curriculum sampler: the optimizer step, its metrics, checkpoints and resume.

One optimizer step consumes `global_tokens / seq_len` consecutive samples of the curriculum (a pure function of
the sample index), split into micro batches whose gradients accumulate. The loss covers every token, as in
Megatron without `--eod-mask-loss`; it is also reported per language from the samples' token tags.
The engine (one process, DDP or FSDP2 under torchrun) and the device come from `train.distributed`; checkpoints
from `train.checkpointing`; the metrics files from `train.metrics`.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import signal
import sys
import time
from collections import defaultdict
from contextlib import AbstractContextManager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from polylm.config import ModelConfig, preset
from polylm.durable import write_json
from polylm.errors import PolyLMError
from polylm.loss import IGNORE_INDEX
from polylm.model import PolyLM, build_model, count_parameters
from polylm.progress import progress_bar
from polylm.runlock import hold_run_dir
from polylm.tokenizer import Tokenizer
from polylm.train.checkpointing import list_checkpoints, load_checkpoint, read_trainer_state, save_checkpoint
from polylm.train.config import OptimSection, TrainConfig
from polylm.train.data import MicroBatch, PretrainingData, TrainingData, language_sums
from polylm.train.distributed import (
    World,
    clip_gradients,
    join_world,
    load_sharded,
    materialize,
    parallelize,
    resolve_engine,
    sync_gradients,
)
from polylm.train.lora import add_lora
from polylm.train.metrics import MetricsLog


def learning_rate(step: int, optim: OptimSection, total_steps: int) -> float:
    """Megatron's schedule for optimizer step `step` (1-based): linear warmup, cosine to min, then constant."""
    decay_steps = optim.decay_steps or total_steps
    low = optim.lr * optim.min_lr_ratio
    if optim.warmup_steps and step <= optim.warmup_steps:
        return optim.lr * step / optim.warmup_steps
    if step > decay_steps:
        return low
    ratio = (step - optim.warmup_steps) / max(decay_steps - optim.warmup_steps, 1)
    return low + 0.5 * (1 + math.cos(math.pi * ratio)) * (optim.lr - low)


def optimizer_for(model: PolyLM, optim: OptimSection) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases and LayerNorm parameters are not decayed (Megatron)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": optim.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # fused: one kernel for all parameters instead of a loop of small ops (7x faster steps on CPU for small models)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, fused=True)


def _merge_languages(world: World, sums: dict[str, float], counts: dict[str, int]) -> tuple[dict, dict]:
    """Per-language loss sums and token counts over all ranks."""
    if world.size == 1:
        return sums, counts
    gathered: list = [None] * world.size
    dist.all_gather_object(gathered, (dict(sums), dict(counts)))
    total_sums, total_counts = defaultdict(float), defaultdict(int)
    for rank_sums, rank_counts in gathered:
        for lang, value in rank_sums.items():
            total_sums[lang] += value
            total_counts[lang] += rank_counts[lang]
    return total_sums, total_counts


def _loss(model: nn.Module, batch: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over the counted tokens, per-token losses) of one micro batch already on the model's device."""
    return model(batch.inputs, targets=batch.targets, position_ids=batch.position_ids, segment_ids=batch.segment_ids)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TrainingData,
    max_tokens: int,
    micro_batch: int,
    precision: AbstractContextManager,
    device: torch.device,
) -> dict[str, float]:
    """Mean loss per language over the counted tokens of the data's validation batches.

    Under torchrun every rank runs it (FSDP's forward is collective); all get the same numbers.
    """
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    was_training = model.training
    model.eval()
    for batch in data.validation(max_tokens, micro_batch):
        on_device = batch.to(device)
        with precision:
            _, losses = _loss(model, on_device)
        for lang, (total, count) in language_sums(batch, losses).items():
            sums[lang] += total
            counts[lang] += count
    model.train(was_training)
    return {lang: sums[lang] / counts[lang] for lang in sorted(counts) if counts[lang]}


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token, PaLM's estimate as nanoGPT uses it: 6·N for the weights (forward and backward;
    the tied output layer counts, as it is computed) plus 12·layers·hidden·seq_len for attention scores."""
    return 6 * count_parameters(config) + 12 * config.num_layers * config.hidden_size * seq_len


class StopRequest:
    """When to stop before `run.max_steps`: SIGTERM / SIGINT (checkpoint after the current step and return instead
    of dying mid-step), or the time budget `run.max_minutes` running out."""

    def __init__(self, max_minutes: float | None) -> None:
        self.signalled = False
        self.deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum: int, frame: object) -> None:
        self.signalled = True

    def agreed(self, world: World) -> str | None:
        """Why to stop after this step ("signal", "time"), the same on every rank; None to go on."""
        out_of_time = self.deadline is not None and time.monotonic() > self.deadline
        flags = torch.tensor([int(self.signalled), int(out_of_time)], device=world.device)
        if world.size > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return "signal" if flags[0] else "time" if flags[1] else None

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _check_batch(config: TrainConfig, seq_len: int, num_samples: int, world: World, data_dir: Path) -> int:
    """Samples per optimizer step, after checking that the batch splits evenly and the data is long enough."""
    samples_per_step, remainder = divmod(config.batch.global_tokens, seq_len)
    if remainder or samples_per_step % (config.batch.micro_batch * world.size):
        raise PolyLMError(
            f"train config: batch.global_tokens {config.batch.global_tokens} must be a multiple of seq_len {seq_len} "
            f"× batch.micro_batch {config.batch.micro_batch} × world size {world.size}"
        )
    available = num_samples // samples_per_step
    if config.run.max_steps > available:
        raise PolyLMError(
            f"train config: run.max_steps {config.run.max_steps} needs {config.run.max_steps * samples_per_step} "
            f"samples; the data in {data_dir} has {num_samples} ({available} steps)"
        )
    return samples_per_step


def _check_fresh_run_dir(run_dir: Path) -> None:
    """A run without `--resume auto` starts at step 0: refuse a directory that holds an earlier run, whose
    metrics it would truncate and whose checkpoints it would overwrite or rotate away."""
    checkpoints = list_checkpoints(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if checkpoints or (metrics.exists() and metrics.stat().st_size):
        held = f"checkpoints up to {checkpoints[-1].name}" if checkpoints else "metrics.jsonl"
        raise PolyLMError(
            f"{run_dir}: holds an earlier run ({held}); continue it with --resume auto, or choose a new --out"
        )


def _check_world_size(checkpoint: Path, trainer_state: dict, config: TrainConfig, world: World) -> None:
    written_by = trainer_state["world_size"]
    if written_by != world.size and not config.run.allow_world_size_change:
        raise PolyLMError(
            f"{checkpoint}: written by {written_by} rank(s), this run has {world.size}. The data order and the "
            "global batch do not depend on the world size, so the run can go on; per-step losses may then differ "
            "in the last bits. Pass run.allow_world_size_change=true to resume anyway."
        )


def _peak_host_memory(world: World) -> int:
    """The largest peak RSS over the ranks so far, in bytes: what building (or loading) the model cost the host."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    if world.size == 1:
        return peak
    largest = torch.tensor(peak, dtype=torch.int64, device=world.device)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return int(largest)


def _build_model(
    config: TrainConfig, tokenizer: Tokenizer, seq_len: int, world: World, on_meta: bool
) -> tuple[PolyLM, ModelConfig]:
    """A fresh model of the preset (pretraining) or the weights of `model.path` (instruction tuning), in fp32.

    `on_meta`: the model is left on the meta device, to be sharded, then given its values (FSDP).
    """
    if config.model.path:
        from polylm.hf_checkpoint import check_tokenizer, load_model, read_config
        from polylm.quantize.load import is_quantized

        if is_quantized(Path(config.model.path)):
            raise PolyLMError(
                f"{config.model.path}: a model written by `polylm quantize` is for inference; tune the model it was "
                "quantized from"
            )
        model_config = read_config(config.model.path).replace(dtype="float32")
        if model_config.vocab_size != tokenizer.vocab_size:
            raise PolyLMError(
                f"{config.model.path}: vocab_size {model_config.vocab_size} but the data's tokenizer has "
                f"{tokenizer.vocab_size} pieces; prepare the data with the model's tokenizer"
            )
        if not on_meta:
            return load_model(config.model.path, dtype=torch.float32, device=world.device), model_config
        check_tokenizer(Path(config.model.path), model_config)
    else:
        model_config = preset(config.model.preset).replace(
            **{"vocab_size": tokenizer.vocab_size, **config.model.overrides, "dtype": "float32"}
        )
        if model_config.vocab_size < tokenizer.vocab_size:
            raise PolyLMError(
                f"train config: model.overrides.vocab_size {model_config.vocab_size} is smaller than the tokenizer's "
                f"{tokenizer.vocab_size} pieces"
            )
        if model_config.max_position_embeddings < seq_len:
            raise PolyLMError(f"model context {model_config.max_position_embeddings} is shorter than seq_len {seq_len}")
    if on_meta:
        with torch.device("meta"):
            return PolyLM(model_config), model_config
    return build_model(model_config, seed=config.run.seed, device=world.device), model_config


def train(config: TrainConfig, run_dir: Path, resume: str | None = None, data: TrainingData | None = None) -> dict:
    """Train until `run.max_steps`; returns the last step's metrics. `resume="auto"` continues the latest checkpoint.

    `data` defaults to the pretraining curriculum of `config.data`; instruction tuning passes its own.
    Under `torchrun --nproc_per_node=N` each rank takes its contiguous share of every global batch and the engine
    (DDP, or FSDP2 with `parallel.engine=fsdp`) averages the gradients: the step is the same as one process
    accumulating the whole batch. Micro batches are weighted by their counted tokens, so the step's loss is the
    mean over every counted token of the global batch.
    """
    world = join_world(config.run.device)
    engine = resolve_engine(config.parallel.engine, world)
    data = data if data is not None else PretrainingData(Path(config.data))
    samples_per_step = _check_batch(config, data.seq_len, data.num_samples, world, Path(config.data))
    with hold_run_dir(run_dir, "training"):
        trainer = Trainer(config, run_dir, data, world, engine, samples_per_step, resume == "auto")
        return trainer.run()


class Trainer:
    """One run held by this process: its model, optimizer, data, metrics log and step counter.

    `run` loops `train_step` (whose gradients come from `forward_backward`), then `maybe_validate` and
    `maybe_checkpoint`, until `run.max_steps`, a signal or the time budget.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        data: TrainingData,
        world: World,
        engine: str,
        samples_per_step: int,
        resume: bool,
    ) -> None:
        self.config, self.run_dir, self.data, self.world, self.engine = config, run_dir, data, world, engine
        self.samples_per_step = samples_per_step
        if not resume:
            _check_fresh_run_dir(run_dir)
        checkpoints = list_checkpoints(run_dir) if resume else []
        trainer_state = read_trainer_state(checkpoints[-1]) if checkpoints else None
        if trainer_state is not None:
            _check_world_size(checkpoints[-1], trainer_state, config, world)

        torch.manual_seed(config.run.seed)
        on_meta = engine == "fsdp" and config.adapters is None  # LoRA adapters are added to a whole model
        self.model, self.model_config = _build_model(config, data.tokenizer, data.seq_len, world, on_meta)
        if config.adapters is not None:
            self.model = add_lora(self.model, config.adapters)
        self.network = parallelize(self.model, engine, config.parallel, config.run.precision, world)
        if on_meta and config.model.path:
            load_sharded(self.model, Path(config.model.path), world.device)
        elif on_meta:
            materialize(self.model, config.run.seed, world.device)
        self.optimizer = optimizer_for(self.model, config.optim)
        self.step, self.tokens_seen = 0, 0
        if trainer_state is not None:
            load_checkpoint(checkpoints[-1], self.model, self.optimizer)
            data.load_state_dict(trainer_state["sampler"])
            torch.set_rng_state(trainer_state["torch_rng"])
            if world.device.type == "cuda" and trainer_state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(trainer_state["cuda_rng"])
            self.step, self.tokens_seen = trainer_state["step"], trainer_state["tokens_seen"]
        # Recorded with the first step: under FSDP the meta-device build keeps it well under the model's size.
        self.startup_peak_rss = _peak_host_memory(world)
        world.barrier()  # every rank has read the checkpoint list before rank 0 writes anything
        self.log = None
        if world.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            resumed = self.step if trainer_state is not None else None
            self.log = MetricsLog(run_dir, resumed, config.run.tensorboard, config.run.log_every)
            write_json(run_dir / "train_config.json", config.to_dict())
            data.tokenizer.save(run_dir / "tokenizer")
        # Under FSDP bf16 comes from its MixedPrecisionPolicy; elsewhere from autocast over fp32 weights.
        self.autocast = torch.autocast(
            world.device.type, dtype=torch.bfloat16, enabled=config.run.precision == "bf16" and engine != "fsdp"
        )

    def validate(self) -> dict:
        """Validation loss per language (logged by rank 0), as `{val_<metric>_by_lang: ...}`; {} without data."""
        config = self.config
        losses = evaluate(self.model, self.data, config.run.eval_tokens, config.batch.micro_batch, self.autocast,
                          self.world.device)  # fmt: skip
        if not losses:
            return {}
        if self.log is not None:
            perplexity = {k: math.exp(v) for k, v in losses.items()}
            self.log.validation({"step": self.step, "loss_by_lang": losses, "perplexity_by_lang": perplexity})
        return {f"val_{self.data.metric}_by_lang": losses}

    def forward_backward(self, micro: list[MicroBatch]) -> tuple[torch.Tensor, dict, dict, int]:
        """Accumulate the gradients of this rank's micro batches, each weighted by its share of the counted tokens
        of the whole global batch; (step loss on this rank, loss sums and token counts per language, counted)."""
        world = self.world
        counted = torch.tensor([int((m.targets != IGNORE_INDEX).sum()) for m in micro], dtype=torch.float64)
        step_counted = counted.sum().to(world.device)
        if world.size > 1:
            dist.all_reduce(step_counted)
        weights = (counted * world.size / step_counted.cpu().clamp(min=1)).tolist()
        loss_sum = torch.zeros((), dtype=torch.float64, device=world.device)
        lang_loss, lang_tokens = defaultdict(float), defaultdict(int)
        for number, batch in enumerate(micro):
            on_device = batch.to(world.device)
            with sync_gradients(self.network, number == len(micro) - 1), self.autocast:
                mean, losses = _loss(self.network, on_device)
                (mean * weights[number]).backward()
            loss_sum += mean.detach().double() * weights[number]
            for lang, (total, count) in language_sums(batch, losses).items():
                lang_loss[lang] += total
                lang_tokens[lang] += count
        return loss_sum, lang_loss, lang_tokens, int(step_counted)

    def train_step(self, samples: list) -> dict:
        """One optimizer step on one global batch; its metrics record."""
        config, world = self.config, self.world
        started = time.perf_counter()
        self.step += 1
        lr = learning_rate(self.step, config.optim, config.run.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        per_rank = self.samples_per_step // world.size
        mine = samples[world.rank * per_rank : (world.rank + 1) * per_rank]
        micro = [
            self.data.collate(mine[i : i + config.batch.micro_batch])
            for i in range(0, per_rank, config.batch.micro_batch)
        ]
        loss_sum, lang_loss, lang_tokens, counted = self.forward_backward(micro)
        grad_norm = clip_gradients(self.model, config.optim.clip_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if world.size > 1:
            dist.all_reduce(loss_sum)
        loss_sum /= world.size
        lang_loss, lang_tokens = _merge_languages(world, lang_loss, lang_tokens)
        step_tokens = len(samples) * self.data.seq_len
        self.tokens_seen += step_tokens
        total = sum(lang_tokens.values())
        record = {
            "step": self.step,
            "loss": float(loss_sum),
            "loss_by_lang": {lang: lang_loss[lang] / lang_tokens[lang] for lang in sorted(lang_tokens)},
            "lang_mix": {lang: lang_tokens[lang] / total for lang in sorted(lang_tokens)},
            "stage": getattr(samples[0], "stage", 0),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_seen": self.tokens_seen,
            "counted_tokens": counted,
            "tokens_per_s": step_tokens / (time.perf_counter() - started),
            "world_size": world.size,
        }
        peak = config.run.peak_flops
        step_flops = flops_per_token(self.model_config, self.data.seq_len)
        record["mfu"] = record["tokens_per_s"] * step_flops / (peak * world.size) if peak else None
        return record

    def maybe_validate(self, record: dict, final: bool, stopping: str | None) -> None:
        """Every `run.eval_every` steps, and at the end unless a signal asks to stop at once; into `record`."""
        every = self.config.run.eval_every
        if not ((every and self.step % every == 0) or (final and stopping != "signal")):
            return
        validation = self.validate()
        if validation:
            by_lang = validation[f"val_{self.data.metric}_by_lang"]
            record[f"val_{self.data.metric}"] = sum(by_lang.values()) / len(by_lang)
            record.update(validation)

    def maybe_checkpoint(self, final: bool) -> None:
        """Every `run.checkpoint_every` steps and at the end: weights, optimizer, sampler and RNG states."""
        config, world = self.config, self.world
        if not (self.step % config.run.checkpoint_every == 0 or final):
            return
        state = {
            "model_config": self.model_config.to_dict(),
            "lora": dataclasses.asdict(config.adapters) if config.adapters is not None else None,
            "sampler": self.data.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if world.device.type == "cuda" else None,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "world_size": world.size,
            "engine": self.engine,
        }
        save_checkpoint(self.run_dir, self.model, self.optimizer, state, config, world)

    def run(self) -> dict:
        """Steps until `run.max_steps`, a signal or the time budget; the last step's metrics."""
        config = self.config
        if self.step == 0:
            self.validate()
        batches = self.data.batches(self.samples_per_step)
        last: dict = {}
        self.model.train()
        progress = progress_bar(total=config.run.max_steps, initial=self.step, desc="training", unit="step",
                                disable=not self.world.main)  # fmt: skip
        stop = StopRequest(config.run.max_minutes)
        with progress:
            while self.step < config.run.max_steps:
                last = self.train_step(next(batches))
                if self.startup_peak_rss is not None:  # on the first record logged
                    last["startup_peak_rss_gib"] = self.startup_peak_rss / 2**30
                stopping = stop.agreed(self.world)
                final = self.step == config.run.max_steps or stopping is not None
                # A preempted run (signal) checkpoints at once; a finished or time-capped one is validated first.
                self.maybe_validate(last, final, stopping)
                if self.log is not None and (self.step % config.run.log_every == 0 or final):
                    self.log.train(last)
                    self.startup_peak_rss = None
                progress.set_postfix(loss=f"{last['loss']:.3f}", lr=f"{last['lr']:.2e}")
                progress.update(1)
                self.maybe_checkpoint(final)
                if stopping:
                    last["stopped_by"] = stopping
                    if self.world.main:
                        why = "a signal" if stopping == "signal" else f"run.max_minutes ({config.run.max_minutes})"
                        progress.write(f"stopped by {why} after step {self.step}; checkpoint saved, resume with "
                                       "--resume auto", file=sys.stderr)  # fmt: skip
                    break
        stop.restore()
        if self.log is not None:
            self.log.close()
        return last
