"""`polylm <verb>`: one command line over the package.

Each verb is a small function taking parsed arguments; user mistakes (PolyLMError) print one line
and exit 1, anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from polylm.config import PRESETS, preset
from polylm.errors import PolyLMError

LANGUAGE_ARG_HELP = "text files, one sentence/document per line; prefix LANG= to name the language (else the file stem)"


def _info(args: argparse.Namespace) -> None:
    from polylm.checkpoint import read_config
    from polylm.model import count_parameters

    config = read_config(args.model) if args.model else preset(args.preset)
    parameters = count_parameters(config)
    bytes_per_param = {"float32": 4, "bfloat16": 2, "float16": 2}[config.dtype]
    summary = {
        "name": config.name,
        "layers": config.num_layers,
        "heads": config.num_heads,
        "hidden": config.hidden_size,
        "ffn": config.ffn_size,
        "context": config.max_position_embeddings,
        "vocab": config.vocab_size,
        "parameters": parameters,
        "dtype": config.dtype,
        "weights_gib": round(parameters * bytes_per_param / 1024**3, 3),
    }
    if args.json:
        print(json.dumps({**summary, "config": config.to_dict()}))
        return
    for key, value in summary.items():
        print(f"{key:<12}{value:,}" if isinstance(value, int) else f"{key:<12}{value}")


def _init(args: argparse.Namespace) -> None:
    from polylm.checkpoint import save_model
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


def _tokenizer_train(args: argparse.Namespace) -> None:
    from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer

    config = TokenizerTrainingConfig(
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        max_sentences=args.max_sentences,
        sampling_alpha=args.sampling_alpha,
        character_coverage=args.character_coverage,
        normalization=args.normalization,
        split_digits=not args.no_split_digits,
        seed=args.seed,
        num_threads=args.threads,
    )
    tokenizer = train_tokenizer(args.input, args.out, config)
    print(f"wrote {tokenizer.model_file} ({tokenizer.vocab_size} pieces, {config.model_type})")


def _language_inputs(specs: list[str]) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    for spec in specs:
        language, sep, path = spec.partition("=")
        inputs[language if sep else Path(spec).name.split(".")[0]] = Path(path if sep else spec)
    return inputs


def _tokenizer_stats(args: argparse.Namespace) -> None:
    from polylm.tokenizer import Tokenizer, fertility

    tokenizer = Tokenizer.from_dir(args.tokenizer)
    rows = {lang: fertility(tokenizer, path, args.max_lines) for lang, path in _language_inputs(args.input).items()}
    if args.json:
        print(
            json.dumps(
                {
                    lang: {**vars(s), "tokens_per_char": s.tokens_per_char, "tokens_per_word": s.tokens_per_word}
                    for lang, s in rows.items()
                }
            )
        )
        return
    print(f"{'lang':<6}{'lines':>8}{'chars':>10}{'tokens':>10}{'tok/char':>10}{'tok/word':>10}{'bytes%':>8}")
    for lang, s in rows.items():
        byte_share = 100 * s.byte_fallback_tokens / max(s.tokens, 1)
        print(
            f"{lang:<6}{s.lines:>8}{s.characters:>10}{s.tokens:>10}{s.tokens_per_char:>10.3f}"
            f"{s.tokens_per_word:>10.3f}{byte_share:>8.2f}"
        )


def _generate(args: argparse.Namespace) -> None:
    from polylm.checkpoint import load_model
    from polylm.generate import greedy_generate
    from polylm.tokenizer import Tokenizer

    if args.prompt_file:
        try:
            prompts = [line for line in Path(args.prompt_file).read_text(encoding="utf-8").splitlines() if line]
        except (OSError, UnicodeDecodeError) as exc:
            raise PolyLMError(f"{args.prompt_file}: cannot read prompts ({exc})") from None
    else:
        prompts = [args.prompt]
    model = load_model(args.model)
    tokenizer = Tokenizer.from_dir(args.model)
    for prompt in prompts:
        ids = greedy_generate(model, tokenizer.encode(prompt), args.max_new_tokens, model.config.eos_token_id)
        text = tokenizer.decode([i for i in ids if i != model.config.eos_token_id])
        print(json.dumps({"prompt": prompt, "text": text, "token_ids": ids}, ensure_ascii=False) if args.json else text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polylm", description="PolyLM: run, train, tune and evaluate the multilingual PolyLM models."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    info = verbs.add_parser(
        "info",
        help="print a model's shape and exact parameter count (no weights allocated)",
        description="Print a model's shape and exact parameter count. The model is built on the meta device, "
        "without allocating weights, so this is instant even for polylm-13b.",
    )
    source = info.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=sorted(PRESETS), help="a named preset")
    source.add_argument("--model", help="a Hugging Face model directory (reads only config.json)")
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

    tokenizer = verbs.add_parser("tokenizer", help="train a SentencePiece tokenizer or measure one")
    tok_verbs = tokenizer.add_subparsers(dest="tokenizer_verb", required=True, metavar="VERB")
    train = tok_verbs.add_parser(
        "train",
        help="train a byte-fallback SentencePiece model on language-balanced input",
        description="Train a SentencePiece model with PolyLM's conventions: <unk>=0 <s>=1 </s>=2, byte fallback, "
        "digits split, no BOS added. Each input file is one language; their lines are re-balanced so that each "
        "file's share is proportional to lines**alpha.",
    )
    train.add_argument("--input", nargs="+", required=True, metavar="FILE", help="text files (.txt or .txt.gz)")
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    train.add_argument("--out", required=True, help="output directory (tokenizer.model + transformers files)")
    train.add_argument("--max-sentences", type=int, default=2_000_000, help="sentences fed to the trainer in total")
    train.add_argument("--sampling-alpha", type=float, default=0.3, help="1 = proportional, 0 = equal per language")
    train.add_argument("--character-coverage", type=float, default=0.9995)
    train.add_argument("--normalization", default="identity", help="SentencePiece rule (identity keeps newlines)")
    train.add_argument("--no-split-digits", action="store_true", help="keep multi-digit pieces")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=2)
    train.set_defaults(run=_tokenizer_train)

    stats = tok_verbs.add_parser(
        "stats",
        help="fertility (tokens per character and per word) per language",
        description="Fertility per language: tokens per character, tokens per whitespace word (not meaningful for "
        "zh/ja/th, which write no spaces) and the share of byte-fallback tokens.",
    )
    stats.add_argument("--tokenizer", required=True, help="directory with tokenizer.model, or the .model file")
    stats.add_argument("--input", nargs="+", required=True, metavar="[LANG=]FILE", help=LANGUAGE_ARG_HELP)
    stats.add_argument("--max-lines", type=int, help="read at most this many lines per file")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=_tokenizer_stats)

    generate = verbs.add_parser(
        "generate",
        help="continue prompts with a model (greedy)",
        description="Continue each prompt greedily over the KV cache until </s> or --max-new-tokens.",
    )
    generate.add_argument("--model", required=True, help="model directory (config.json, weights, tokenizer.model)")
    prompt = generate.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text")
    prompt.add_argument("--prompt-file", help="file with one prompt per line")
    generate.add_argument("--max-new-tokens", type=int, default=64)
    generate.add_argument("--json", action="store_true", help="one JSON line per prompt: prompt, text, token_ids")
    generate.set_defaults(run=_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except PolyLMError as exc:
        print(f"polylm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
