"""`polylm evaluate`: score a model on the multilingual benchmarks, results as JSON, markdown and charts."""

from __future__ import annotations

import argparse
from pathlib import Path

from polylm.cli import options
from polylm.errors import PolyLMError
from polylm.evaluate.config import EvalConfig


def _evaluate(args: argparse.Namespace) -> None:
    from polylm.evaluate import evaluate, write_outputs
    from polylm.evaluate.report import markdown

    output = Path(args.output)
    if output.suffix != ".json":
        raise PolyLMError(f"{output}: --output must name a .json file")
    report = evaluate(EvalConfig(**options.values(args, EvalConfig)))
    paths = write_outputs(report, output)
    print(markdown(report), end="")
    print("wrote " + ", ".join(str(p) for p in paths))


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "evaluate",
        help="score a model on XNLI, XCOPA, PAWS-X, XWinograd, TyDiQA, XQuAD, MTG, WMT20, FLORES",
        description="Evaluate a model directory on multilingual benchmarks read from --data-dir (layout in "
        "docs/evaluation.md). Writes FILE.json (results[task][language][metric], config, versions), FILE.md "
        "(tables) and FILE.<task>.png (bar charts).",
    )
    parser.add_argument("--output", required=True, help="results FILE.json (FILE.md and FILE.<task>.png beside it)")
    options.add_fields(parser, EvalConfig)
    parser.set_defaults(run=_evaluate)
