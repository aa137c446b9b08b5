"""`polylm pretrain`, `polylm finetune` and `polylm plot`."""

from __future__ import annotations

import argparse
import functools
import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from polylm.train.config import TrainConfig


def _config(args: argparse.Namespace, kind: type[TrainConfig]) -> TrainConfig:
    from polylm.train.config import load_train_config

    flags = [
        f"run.{name}={value}"
        for name in ("max_steps", "checkpoint_every")
        if (value := getattr(args, name)) is not None
    ]
    return load_train_config(Path(args.config) if args.config else None, [*args.overrides, *flags], kind)


def _pretrain(args: argparse.Namespace) -> None:
    from polylm.train.config import TrainConfig
    from polylm.train.trainer import train

    last = train(_config(args, TrainConfig), Path(args.out), resume=args.resume)
    _report(args, last, ("step", "loss", "tokens_seen"))


def _report(args: argparse.Namespace, last: dict, keys: tuple[str, ...]) -> None:
    """Print the last step's summary; a run stopped by a signal exits 130 (interrupted), after its checkpoint."""
    print(json.dumps({"run": args.out, **{k: last.get(k) for k in (*keys, "stopped_by")}}))
    if last.get("stopped_by") == "signal":
        raise KeyboardInterrupt


def _finetune(args: argparse.Namespace) -> None:
    from polylm.instruct.finetune import finetune
    from polylm.train.config import FinetuneConfig

    last = finetune(_config(args, FinetuneConfig), Path(args.out), resume=args.resume)
    _report(args, last, ("step", "loss", "val_response_loss"))


def _plot(args: argparse.Namespace) -> None:
    from polylm.train.plots import plot_run

    for path in plot_run(Path(args.run_dir)):
        print(f"wrote {path}")


def _run_parser(verbs: argparse._SubParsersAction, name: str, kind: type, summary: str, description: str,
                config_help: str) -> argparse.ArgumentParser:  # fmt: skip
    """pretrain's or finetune's parser: the run flags, then every key of `kind` with its docstring (the epilog)."""
    from polylm.cli.options import CONFIG_KEYS, ConfigKeysFormatter

    parser = verbs.add_parser(name, help=summary, description=textwrap.fill(description, 100), epilog=CONFIG_KEYS,
                              formatter_class=functools.partial(ConfigKeysFormatter, config=kind))  # fmt: skip
    parser.add_argument("--config", help=config_help)
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="config keys to change (listed below)")
    parser.add_argument("--out", required=True, help="run directory: metrics.jsonl, checkpoints/, tokenizer/")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (run.max_steps)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (run.checkpoint_every)")
    parser.add_argument("--resume", choices=["auto"], help="continue from the latest complete checkpoint")
    return parser


def register(verbs: argparse._SubParsersAction) -> None:
    from polylm.train.config import FinetuneConfig, TrainConfig

    pretrain = _run_parser(
        verbs,
        "pretrain",
        TrainConfig,
        "pretrain on prepared data with the curriculum (one process, or DDP / FSDP2 under torchrun)",
        "Pretrain a model on a directory written by `polylm data prepare`. The config is YAML "
        "(see examples/pretrain/tiny.yaml and docs/pretrain.md); dotted.key=value arguments override it, "
        "e.g. optim.lr=6e-5 batch.global_tokens=1048576 parallel.engine=fsdp parallel.compile=true. "
        "Under `torchrun --nproc_per_node=N -m polylm.cli pretrain ...` the ranks split every global batch.",
        "YAML train config (preset: tiny | polylm-1.7b | polylm-13b, data: DIR)",
    )
    pretrain.set_defaults(run=_pretrain)
    finetune = _run_parser(
        verbs,
        "finetune",
        FinetuneConfig,
        "instruction-tune a model on `polylm instruct prepare` data (response-only loss, packing, LoRA)",
        "Tune the model of model.path on the conversations of DIR (written by `polylm instruct "
        "prepare`) with the pretraining trainer: same engines, checkpoints, resume and metrics. The loss counts "
        "response tokens and their </s> only; sft.template (multialpaca | chat) is the one to chat with after. "
        "See examples/finetune/multialpaca-tiny.yaml and docs/finetune.md.",
        "YAML finetune config (model.path, data, sft, lora, optim, batch, run)",
    )
    finetune.set_defaults(run=_finetune)

    plot = verbs.add_parser(
        "plot",
        help="draw loss per language and the language mix of a run to PNG",
        description="Read RUN_DIR/metrics.jsonl and validation.jsonl; write RUN_DIR/plots/loss_by_language.png "
        "and language_mix.png, with the curriculum's stage switch marked.",
    )
    plot.add_argument("run_dir", help="a directory written by `polylm pretrain`")
    plot.set_defaults(run=_plot)
