"""`polylm pretrain`, `polylm export` and `polylm plot`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _pretrain(args: argparse.Namespace) -> None:
    from polylm.train.config import load_train_config, validate
    from polylm.train.trainer import train

    config = load_train_config(Path(args.config) if args.config else None, args.overrides)
    for flag, key in (("max_steps", "max_steps"), ("checkpoint_every", "checkpoint_every")):
        if getattr(args, flag) is not None:
            setattr(config.run, key, getattr(args, flag))
    validate(config)
    last = train(config, Path(args.out), resume=args.resume)
    print(json.dumps({"run": args.out, **{k: last[k] for k in ("step", "loss", "tokens_seen")}}))


def _export(args: argparse.Namespace) -> None:
    from polylm.train.checkpointing import export_checkpoint

    print(f"wrote {export_checkpoint(Path(args.checkpoint), Path(args.out))}")


def _plot(args: argparse.Namespace) -> None:
    from polylm.train.plots import plot_run

    for path in plot_run(Path(args.run_dir)):
        print(f"wrote {path}")


def register(verbs: argparse._SubParsersAction) -> None:
    pretrain = verbs.add_parser(
        "pretrain",
        help="pretrain on prepared data with the curriculum (one process, or DDP / FSDP2 under torchrun)",
        description="Pretrain a model on a directory written by `polylm data prepare`. The config is YAML "
        "(see examples/pretrain/tiny.yaml and docs/pretrain.md); dotted.key=value arguments override it, "
        "e.g. optim.lr=6e-5 batch.global_tokens=1048576 parallel.engine=fsdp parallel.compile=true. "
        "Under `torchrun --nproc_per_node=N -m polylm.cli pretrain ...` the ranks split every global batch.",
    )
    pretrain.add_argument("--config", help="YAML train config (preset: tiny | polylm-1.7b | polylm-13b, data: DIR)")
    pretrain.add_argument("overrides", nargs="*", metavar="dotted.key=value")
    pretrain.add_argument("--out", required=True, help="run directory: metrics.jsonl, checkpoints/, tokenizer/")
    pretrain.add_argument("--max-steps", type=int, help="optimizer steps (run.max_steps)")
    pretrain.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (run.checkpoint_every)")
    pretrain.add_argument("--resume", choices=["auto"], help="continue from the latest complete checkpoint")
    pretrain.set_defaults(run=_pretrain)

    export = verbs.add_parser(
        "export",
        help="write a training checkpoint as a Hugging Face model directory",
        description="Write RUN/checkpoints/step-N as a GPT2LMHeadModel directory (safetensors, config.json, "
        "tokenizer) that `polylm generate` and transformers load.",
    )
    export.add_argument("checkpoint", help="a checkpoint directory, e.g. RUN/checkpoints/step-00000100")
    export.add_argument("--out", required=True, help="output model directory")
    export.set_defaults(run=_export)

    plot = verbs.add_parser(
        "plot",
        help="draw loss per language and the language mix of a run to PNG",
        description="Read RUN_DIR/metrics.jsonl and validation.jsonl; write RUN_DIR/plots/loss_by_language.png "
        "and language_mix.png, with the curriculum's stage switch marked.",
    )
    plot.add_argument("run_dir", help="a directory written by `polylm pretrain`")
    plot.set_defaults(run=_plot)
