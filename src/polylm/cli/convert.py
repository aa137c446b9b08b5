"""`polylm convert`: Megatron-LM checkpoints (PolyLM's training layout) to and from polylm's Hugging Face layout."""

from __future__ import annotations

import argparse
from pathlib import Path


def _convert(args: argparse.Namespace) -> None:
    from polylm.errors import PolyLMError
    from polylm.megatron_checkpoint import hf_to_megatron, megatron_to_hf

    if (args.source is None) == (args.target is None):
        raise PolyLMError("give exactly one of --from megatron (Megatron -> HF) or --to megatron (HF -> Megatron)")
    if (args.source or args.target) != "megatron":
        raise PolyLMError(f"--from/--to {args.source or args.target!r}: only 'megatron' is known")
    if args.source:
        if args.tp != 1 or args.pp != 1 or args.iteration is not None:
            raise PolyLMError("--tp, --pp and --iteration apply to --to megatron (reading finds the split itself)")
        out = megatron_to_hf(Path(args.path), Path(args.out), Path(args.tokenizer) if args.tokenizer else None)
        print(f"wrote {out}: a Hugging Face model (polylm generate --model {out})")
        return
    if args.tokenizer:
        raise PolyLMError("--tokenizer applies to --from megatron (the HF directory's tokenizer is copied)")
    out = hf_to_megatron(Path(args.path), Path(args.out), args.tp, args.pp, args.iteration)
    print(f"wrote {out}: Megatron-LM checkpoint, TP {args.tp} x PP {args.pp} (--load {out})")


def register(verbs: argparse._SubParsersAction) -> None:
    convert = verbs.add_parser(
        "convert",
        help="Megatron-LM checkpoints <-> Hugging Face: --from megatron CKPT or --to megatron HF_DIR",
        description="Convert between Megatron-LM GPT checkpoints (PolyLM was trained with a Megatron fork; any "
        "tensor/pipeline split, checkpoint_version 2 or 3, release/ or iter_N/ or the tracker file) and "
        "polylm's Hugging Face layout (docs/checkpoints.md).",
    )
    convert.add_argument("path", help="the Megatron checkpoint (--from) or the Hugging Face directory (--to)")
    convert.add_argument("--from", dest="source", help="megatron: read PATH as a Megatron checkpoint")
    convert.add_argument("--to", dest="target", help="megatron: write the HF model at PATH as a Megatron checkpoint")
    convert.add_argument("--out", required=True, help="output directory (must not hold files)")
    convert.add_argument(
        "--tokenizer",
        help="with --from: a directory with tokenizer.model; copied to the output, and the padded embedding is "
        "trimmed to its size (default: a tokenizer.model beside the checkpoint's tracker file, else "
        "args.vocab_size, else all rows)",
    )
    convert.add_argument("--tp", type=int, default=1, help="with --to: tensor parallel size (default 1)")
    convert.add_argument("--pp", type=int, default=1, help="with --to: pipeline parallel size (default 1)")
    convert.add_argument(
        "--iteration", type=int, help="with --to: write iter_N/ with this iteration (default: release/)"
    )
    convert.set_defaults(run=_convert)
