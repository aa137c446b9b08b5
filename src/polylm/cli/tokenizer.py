"""`polylm tokenizer train|stats`. The training flags are TokenizerTrainingConfig's fields."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polylm.cli import options
from polylm.tokenizer import TokenizerTrainingConfig

LANGUAGE_ARG_HELP = "text files, one sentence/document per line; prefix LANG= to name the language (else the file stem)"


def _tokenizer_train(args: argparse.Namespace) -> None:
    from polylm.tokenizer import train_tokenizer

    config = TokenizerTrainingConfig(**options.values(args, TokenizerTrainingConfig))
    tokenizer = train_tokenizer(args.input, args.out, config)
    print(f"wrote {tokenizer.model_file} ({tokenizer.vocab_size} pieces, {config.model_type})")


def _language_inputs(specs: list[str]) -> dict[str, Path]:
    inputs: dict[str, Path] = {}
    for spec in specs:
        language, sep, path = spec.partition("=")
        inputs[language if sep else Path(spec).name.split(".")[0]] = Path(path if sep else spec)
    return inputs


def _tokenizer_stats(args: argparse.Namespace) -> None:
    from polylm.tokenizer import Tokenizer, fertility, fertility_table

    tokenizer = Tokenizer.from_dir(args.tokenizer)
    rows = {lang: fertility(tokenizer, path, args.max_lines) for lang, path in _language_inputs(args.input).items()}
    print(json.dumps({lang: s.to_dict() for lang, s in rows.items()}) if args.json else fertility_table(rows))


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
    train.add_argument("--out", required=True, help="output directory (tokenizer.model + transformers files)")
    options.add_fields(train, TokenizerTrainingConfig, required=("vocab_size",))
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
