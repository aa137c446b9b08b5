"""`polylm tokenizer train|stats`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LANGUAGE_ARG_HELP = "text files, one sentence/document per line; prefix LANG= to name the language (else the file stem)"


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


def register(verbs: argparse._SubParsersAction) -> None:
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
