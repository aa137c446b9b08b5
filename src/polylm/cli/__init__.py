"""`polylm <verb>`: one command line over the package.

Each verb lives in the module of its concern and registers its own parser; user mistakes (PolyLMError)
print one line and exit 1, anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from polylm.cli import (
    convert,
    data,
    demo,
    evaluate,
    export,
    generate,
    instruct,
    model,
    selfinstruct,
    serve,
    tokenizer,
    train,
)
from polylm.errors import PolyLMError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polylm", description="PolyLM: run, train, tune and evaluate the multilingual PolyLM models."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    modules = (model, tokenizer, generate, data, train, export, convert, instruct, evaluate, serve, selfinstruct, demo)
    for module in modules:
        module.register(verbs)
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
