"""`polylm export` and `polylm quantize`: a model in the forms other runtimes and small machines need."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from polylm.templates import TEMPLATES

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "q4_k_m")


def _export(args: argparse.Namespace) -> None:
    from polylm.errors import PolyLMError

    out = Path(args.out)
    output_format = args.format or ("gguf" if out.suffix == ".gguf" else "hf")
    if output_format == "hf":
        from polylm.train.checkpointing import export_checkpoint

        if args.outtype or args.check:
            raise PolyLMError("--outtype and --check apply to --format gguf")
        print(f"wrote {export_checkpoint(Path(args.source), out)}")
        return
    from polylm.gguf import export_gguf
    from polylm.train.checkpointing import as_model_dir

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = as_model_dir(args.source, Path(scratch))
        summary = export_gguf(model_dir, out, args.outtype or "f16", args.template)
        if args.check:
            from polylm.gguf_check import compare

            summary["check"] = compare(model_dir, out, prompts=8, new_tokens=16)
    print(json.dumps(summary, ensure_ascii=False))


def _quantize(args: argparse.Namespace) -> None:
    from polylm.hub import resolve_model_dir
    from polylm.quantize.convert import quantize_model

    source = resolve_model_dir(args.model)
    summary = quantize_model(source, Path(args.out), args.bits, args.group_size)
    if args.compare:
        from polylm.quantize.quality import compare

        summary["compare"] = compare(source, Path(args.out), Path(args.compare))
    print(json.dumps(summary, ensure_ascii=False))


def register(verbs: argparse._SubParsersAction) -> None:
    export = verbs.add_parser(
        "export",
        help="write a training checkpoint as a Hugging Face directory, or a model as a GGUF file for llama.cpp",
        description="Two conversions. --format hf (the default unless --out ends in .gguf): RUN/checkpoints/step-N "
        "as a GPT2LMHeadModel directory (safetensors, config.json, tokenizer) that polylm and transformers load. "
        "--format gguf: a model directory, hub id or training checkpoint as one GGUF file that llama.cpp runs (and "
        "its server, Ollama, LM Studio), with the SentencePiece vocabulary, PolyLM's special ids and its prompt "
        "formats as the chat template. Example: polylm export DAMO-NLP-MT/polylm-1.7b --out polylm-1.7b.q8_0.gguf "
        "--outtype q8_0. See docs/quantization.md.",
    )
    export.add_argument("source", help="a checkpoint (RUN/checkpoints/step-N), or for gguf a model dir or hub id")
    export.add_argument("--out", required=True, help="output model directory, or FILE.gguf")
    export.add_argument("--format", choices=["hf", "gguf"], help="default: gguf when --out ends in .gguf, else hf")
    export.add_argument(
        "--outtype",
        metavar="|".join(OUTTYPES),
        help="gguf weights: f32, f16 (default), bf16, or llama.cpp's q8_0 / q4_k_m (needs llama-cpp-python)",
    )
    export.add_argument(
        "--template",
        default="multialpaca",
        choices=list(TEMPLATES),
        help="prompt format written as the GGUF's default chat template (all three are also written by name)",
    )
    export.add_argument(
        "--check",
        action="store_true",
        help="then run the file in llama.cpp and compare logits and greedy tokens with polylm on 8 prompts",
    )
    export.set_defaults(run=_export)

    quantize = verbs.add_parser(
        "quantize",
        help="write an int8 or int4 copy of a model that every --model flag loads (CPU inference)",
        description="Quantize a model directory (or hub id) shard by shard, never holding the whole model: "
        "--bits 8 stores int8 weights with one scale per output channel; --bits 4 stores 4-bit weights with a scale "
        "and a zero per group of --group-size input channels (32, 64, 128 or 256; default 64). The tied embedding "
        "and output layer stay int8 in both. The result loads with `polylm generate|chat|evaluate|serve --model DIR` "
        "and `pipeline(model=DIR)`, on the CPU. See docs/quantization.md.",
    )
    quantize.add_argument("model", help="model directory or hub id")
    quantize.add_argument("--out", required=True, help="output directory")
    quantize.add_argument("--bits", type=int, required=True, help="8 or 4")
    quantize.add_argument("--group-size", type=int, help="--bits 4 only: input channels per scale (default 64)")
    quantize.add_argument(
        "--compare",
        metavar="DATA_DIR",
        help="then measure held-out perplexity per language of both models on a `polylm data prepare` directory, "
        "and how often their greedy continuations agree",
    )
    quantize.set_defaults(run=_quantize)
