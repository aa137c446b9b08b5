"""The pretraining and finetuning configs: one typed tree each, read from YAML plus `dotted.key=value` overrides,
saved with every checkpoint in its resolved form.

Defaults follow PolyLM's launch scripts and model card (`../shared/spec/polylm-facts.md` §5): AdamW β (0.9, 0.95),
eps 1e-8, weight decay 1e-4 (not on biases and norms), clip 1.0, cosine to lr/10 after a linear warmup. The
1.7B model card says lr 1e-4 and 4M-token batches; its launch script says 6e-5 and 1M tokens: the presets take
the card, and either is one override away (`optim.lr=6e-5 batch.global_tokens=1048576`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from polylm.configfile import merge, read_yaml, typed
from polylm.errors import PolyLMError

ENGINES = ("auto", "single", "ddp", "fsdp")
TEMPLATES = ("multialpaca", "chat", "plain")


@dataclass
class ModelSection:
    preset: str = "tiny"
    """The model's shape: tiny, polylm-1.7b or polylm-13b (`polylm info --preset NAME` shows one)."""
    overrides: dict = field(default_factory=dict)
    """ModelConfig fields to change on the preset (vocab_size always follows the data's tokenizer)."""
    path: str | None = None
    """Start from the weights of this Hugging Face model directory (instruction tuning) instead of the preset."""


@dataclass
class OptimSection:
    lr: float = 1.0e-4
    """Peak learning rate, reached at the end of the warmup."""
    min_lr_ratio: float = 0.1
    """The cosine ends at lr × this (Megatron's min_lr: lr/10 in PolyLM's scripts)."""
    warmup_steps: int = 2000
    """Steps of linear warmup from 0."""
    decay_steps: int | None = None
    """Steps over which the cosine runs (warmup included); default: the run's max_steps."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW's (β1, β2)."""
    eps: float = 1e-8
    """AdamW's epsilon."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay, on matrices only (biases and LayerNorm parameters are not decayed)."""
    clip_grad_norm: float = 1.0
    """Gradients are scaled down to this global L2 norm when above it."""


@dataclass
class BatchSection:
    global_tokens: int = 4 * 1024 * 1024
    """Tokens per optimizer step; reached by gradient accumulation over micro batches."""
    micro_batch: int = 8
    """Sequences per forward/backward."""


@dataclass
class RunSection:
    max_steps: int = 1000
    """Optimizer steps of the run (`--max-steps`)."""
    checkpoint_every: int = 500
    """Steps between checkpoints; one is also written at the end (`--checkpoint-every`)."""
    max_minutes: float | None = None
    """Training time budget: after the step that crosses it, checkpoint and return (`--resume auto` goes on)."""
    keep_last: int = 3
    """Checkpoints kept; older ones are removed."""
    log_every: int = 1
    """Steps between records of metrics.jsonl (the last step is always logged)."""
    eval_every: int = 0
    """Steps between validation passes (0: only before the first step and after the last)."""
    eval_tokens: int = 20000
    """Held-out tokens evaluated per validation source."""
    seed: int = 1234
    """Seed of the model's initialization and of the torch RNG (dropout)."""
    precision: str = "fp32"
    """`fp32`, or `bf16` autocast with fp32 master weights."""
    peak_flops: float | None = None
    """Peak FLOP/s of one device, for MFU (e.g. 989e12 for an H100's dense bf16); None leaves MFU out."""
    device: str = "auto"
    """`auto` (this rank's GPU when there is one, else CPU), `cuda` or `cpu`."""
    tensorboard: bool = True
    """Also write TensorBoard event files to RUN/tensorboard."""
    allow_world_size_change: bool = False
    """Resume a checkpoint written by a different number of ranks. The data order and the global batch do not
    depend on the world size, so the run goes on with the same samples; only the split changes, and the
    per-step losses can differ in the last bits from what the old world size would have given."""


@dataclass
class ParallelSection:
    engine: str = "auto"
    """`single`, `ddp` or `fsdp` (FSDP2 `fully_shard`); `auto` is ddp under torchrun, single otherwise."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass: less memory, about a third more compute."""
    compile: bool = False
    """`torch.compile` each block (the first steps pay the compile time: ~30 s for the tiny preset on CPU)."""


@dataclass
class LoraSection:
    """Low-rank adapters through `peft` (instruction tuning); the base weights stay frozen."""

    enabled: bool = False
    """Train adapters instead of every weight."""
    r: int = 8
    """The adapters' rank."""
    alpha: int = 16
    """Scale of the adapters' output: alpha / r."""
    dropout: float = 0.05
    """Dropout on the adapters' input."""
    target_modules: list[str] = field(default_factory=lambda: ["c_attn"])
    """Module names to adapt; `c_attn` (the fused QKV projection) is what the community PolyLM fine-tunes use."""


@dataclass
class SftSection:
    """How instruction data becomes training sequences (`polylm finetune`)."""

    template: str = "multialpaca"
    """`multialpaca` or `chat` (polylm.templates), the same the model is then chatted with."""
    seq_len: int = 512
    """Tokens per training sequence; a longer conversation is dropped and counted by language."""
    packing: bool = True
    """Pack several conversations per sequence (attention and positions restart at each), or pad one per sequence."""
    epochs: int = 1
    """Passes over the training conversations that the sample order provides; run.max_steps may stop earlier."""


@dataclass
class TrainConfig:
    """`polylm pretrain`: a model from a preset, trained on the curriculum of `data`."""

    data: str = ""
    """A directory written by `polylm data prepare` (shards, tokenizer, curriculum)."""
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    batch: BatchSection = field(default_factory=BatchSection)
    run: RunSection = field(default_factory=RunSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, where: str = "train config") -> None:
        """Every rule a value must meet, checked before any work starts; PolyLMError naming `where` (the file)
        and the dotted key."""
        checks = [
            ("data", bool(self.data), "must name a directory written by `polylm data prepare`"),
            ("optim.lr", self.optim.lr > 0, "must be > 0"),
            ("optim.min_lr_ratio", 0 <= self.optim.min_lr_ratio <= 1, "must be in [0, 1]"),
            ("optim.warmup_steps", self.optim.warmup_steps >= 0, "must be >= 0"),
            ("batch.global_tokens", self.batch.global_tokens > 0, "must be > 0"),
            ("batch.micro_batch", self.batch.micro_batch > 0, "must be > 0"),
            ("run.max_steps", self.run.max_steps > 0, "must be > 0"),
            ("run.checkpoint_every", self.run.checkpoint_every > 0, "must be > 0"),
            ("run.keep_last", self.run.keep_last > 0, "must be > 0"),
            ("run.precision", self.run.precision in ("fp32", "bf16"), "must be fp32 or bf16"),
            ("run.device", self.run.device in ("auto", "cpu", "cuda"), "must be auto, cpu or cuda"),
            ("parallel.engine", self.parallel.engine in ENGINES, f"must be one of {', '.join(ENGINES)}"),
        ]
        for key, ok, rule in checks:
            if not ok:
                raise PolyLMError(f"{where}: {key}: {rule}")

    @property
    def adapters(self) -> LoraSection | None:
        """The LoRA adapters to train, if any (instruction tuning only)."""
        return None


@dataclass
class FinetuneConfig(TrainConfig):
    """`polylm finetune`: the weights of `model.path` tuned on the conversations of `data`."""

    data: str = ""
    """A directory written by `polylm instruct prepare` (train.jsonl, validation.jsonl)."""
    lora: LoraSection = field(default_factory=LoraSection)
    sft: SftSection = field(default_factory=SftSection)

    def validate(self, where: str = "finetune config") -> None:
        if not self.model.path:
            raise PolyLMError(f"{where}: model.path: must name the model directory to start from")
        super().validate(where)
        checks = [
            ("lora.r", self.lora.r > 0, "must be > 0"),
            ("sft.template", self.sft.template in TEMPLATES, f"must be one of {', '.join(TEMPLATES)}"),
            ("sft.seq_len", self.sft.seq_len > 0, "must be > 0"),
            ("sft.epochs", self.sft.epochs > 0, "must be > 0"),
        ]
        for key, ok, rule in checks:
            if not ok:
                raise PolyLMError(f"{where}: {key}: {rule}")

    @property
    def adapters(self) -> LoraSection | None:
        return self.lora if self.lora.enabled else None


PRESETS: dict[str, dict] = {
    "tiny": {"model": {"preset": "tiny"}, "optim": {"lr": 1e-3, "warmup_steps": 20},
             "batch": {"global_tokens": 16 * 512, "micro_batch": 8}},
    "polylm-1.7b": {"model": {"preset": "polylm-1.7b"}, "optim": {"lr": 1.0e-4, "warmup_steps": 2000},
                    "batch": {"global_tokens": 4 * 1024 * 1024, "micro_batch": 8}, "run": {"precision": "bf16"}},
    "polylm-13b": {"model": {"preset": "polylm-13b"}, "optim": {"lr": 6.0e-5, "warmup_steps": 2500},
                   "batch": {"global_tokens": 4 * 1024 * 1024, "micro_batch": 4}, "run": {"precision": "bf16"}},
}  # fmt: skip


def _dotted(overrides: list[str]) -> dict:
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PolyLMError(f"override {item!r} is not of the form dotted.key=value")
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PolyLMError(f"override {item!r}: {part} is set to a value and used as a section")
        try:
            node[leaf] = yaml.safe_load(raw)
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            first = next(iter(str(exc).splitlines()), type(exc).__name__)
            raise PolyLMError(f"override {item!r}: the value is not valid YAML ({first})") from None
    return nested


def load_train_config(path: Path | None, overrides: list[str] = (), kind: type[TrainConfig] = TrainConfig):
    """Preset (the file's `preset:` key) < file < overrides, as a `kind` (TrainConfig, FinetuneConfig), validated.
    Relative `data` and `model.path` are relative to the file."""
    raw: dict = {}
    if path is not None:
        raw = read_yaml(path) or {}
        if not isinstance(raw, dict):
            raise PolyLMError(f"{path}: expected a mapping at the top")
    where = str(path) if path else "config"
    config = kind()
    preset = raw.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise PolyLMError(f"{where}: preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        merge(config, PRESETS[preset], f"preset {preset}")
    merge(config, raw, where)
    if path is not None and config.data and not Path(config.data).is_absolute():
        config.data = str((path.parent / config.data).resolve())
    if path is not None and config.model.path and not Path(config.model.path).is_absolute():
        config.model.path = str((path.parent / config.model.path).resolve())
    merge(config, _dotted(list(overrides)), "override")
    config.model.overrides = _model_overrides(config.model.overrides, where)
    config.validate(where)
    return config


def _model_overrides(overrides: dict, where: str) -> dict:
    """`model.overrides` checked against ModelConfig's fields and types (vocab_size may pad the tokenizer's)."""
    from polylm.config import ModelConfig

    fields = {f.name: str(f.type) for f in dataclasses.fields(ModelConfig) if f.name not in ("name", "dtype")}
    checked = {}
    for key, value in overrides.items():
        if key not in fields:
            raise PolyLMError(f"{where}: model.overrides.{key}: unknown key (known: {', '.join(fields)})")
        checked[key] = typed(value, fields[key], f"{where}: model.overrides.{key}")
    return checked
