"""`polylm info` and `polylm init`: a model's shape, and a fresh random model directory."""

from __future__ import annotations

import argparse
import json
import sys

from polylm.config import PRESETS, preset


def _info(args: argparse.Namespace) -> None:
    from polylm.hf_checkpoint import model_summary, read_config
    from polylm.hub import resolve_model_dir

    model_dir = resolve_model_dir(args.model) if args.model else None
    config = read_config(model_dir) if model_dir else preset(args.preset)
    summary = model_summary(config, model_dir)
    if args.json:
        print(json.dumps({**summary, "config": config.to_dict()}))
        return
    for key, value in summary.items():
        print(f"{key:<12}{value:,}" if isinstance(value, int) else f"{key:<12}{value}")


def _init(args: argparse.Namespace) -> None:
    from polylm.hf_checkpoint import save_model
    from polylm.model import build_model, count_parameters
    from polylm.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(args.tokenizer)
    config = preset(args.preset)
    if tokenizer.vocab_size != config.vocab_size:
        print(
            f"vocab_size {config.vocab_size} -> {tokenizer.vocab_size} to match {tokenizer.model_file}", file=sys.stderr
        )
        config = config.replace(vocab_size=tokenizer.vocab_size)
    if args.dtype:
        config = config.replace(dtype=args.dtype)
    model = build_model(config, seed=args.seed)
    save_model(model, args.out, tokenizer=tokenizer)
    print(
        f"wrote {config.name} ({count_parameters(config):,} parameters, {config.dtype}, seed {args.seed}) to {args.out}"
    )


def register(verbs: argparse._SubParsersAction) -> None:
    info = verbs.add_parser(
        "info",
        help="print a model's shape and exact parameter count (no weights allocated)",
        description="Print a model's shape and exact parameter count. The model is built on the meta device, "
        "without allocating weights, so this is instant even for polylm-13b.",
    )
    source = info.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named preset")
    source.add_argument("--model", help="a Hugging Face model directory or hub id (reads only config.json)")
    info.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    info.set_defaults(run=_info)

    init = verbs.add_parser(
        "init",
        help="write a randomly initialised model directory (Hugging Face layout)",
        description="Write a randomly initialised model (Megatron init: N(0, 0.006), output projections scaled by "
        "1/sqrt(2 x layers)) as a Hugging Face GPT2LMHeadModel directory with the tokenizer beside it. "
        "vocab_size follows the tokenizer.",
    )
    init.add_argument("--preset", required=True, choices=sorted(PRESETS))
    init.add_argument("--tokenizer", required=True, help="directory with tokenizer.model (its size sets vocab_size)")
    init.add_argument("--out", required=True, help="output model directory")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--dtype", choices=["float32", "bfloat16"], help="default: the preset's")
    init.set_defaults(run=_init)
