"""`polylm evaluate`: score a model on the multilingual benchmarks, results as JSON, markdown and charts."""

from __future__ import annotations

import argparse
from pathlib import Path

from polylm.errors import PolyLMError


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _evaluate(args: argparse.Namespace) -> None:
    from polylm.evaluate import EvalConfig, evaluate, write_outputs
    from polylm.evaluate.report import markdown

    output = Path(args.output)
    if output.suffix != ".json":
        raise PolyLMError(f"{output}: --output must name a .json file")
    config = EvalConfig(
        model=args.model,
        tasks=_list(args.tasks),
        languages=_list(args.languages) if args.languages else None,
        data_dir=args.data_dir,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        seed=args.seed,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        prefix_token=args.prefix_token,
        skip_bad_rows=args.skip_bad_rows,
        device=args.device,
        dtype=args.dtype,
    )
    report = evaluate(config)
    paths = write_outputs(report, output)
    print(markdown(report), end="")
    print("wrote " + ", ".join(str(p) for p in paths))


# The names of polylm.evaluate.tasks.TASKS and GROUPS (not imported here: the metrics libraries load slowly).
TASK_NAMES = (
    "xnli, xcopa, pawsx, xwinograd, tydiqa, xquad, mtg (= mtg_story, mtg_question, mtg_title, mtg_summary), "
    "wmt20, flores"
)


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "evaluate",
        help="score a model on XNLI, XCOPA, PAWS-X, XWinograd, TyDiQA, XQuAD, MTG, WMT20, FLORES",
        description="Evaluate a model directory on multilingual benchmarks read from --data-dir (layout in "
        "docs/evaluation.md). Writes FILE.json (results[task][language][metric], config, versions), FILE.md "
        "(tables) and FILE.<task>.png (bar charts).",
    )
    parser.add_argument("--model", required=True, help="model directory (with tokenizer.model), or a hub id")
    parser.add_argument("--tasks", required=True, help=f"comma-separated: {TASK_NAMES}")
    parser.add_argument(
        "--languages", help="comma-separated language codes (translation: directions like en-zh, or a language)"
    )
    parser.add_argument("--data-dir", default="data/benchmarks", help="benchmark folder (default data/benchmarks)")
    parser.add_argument("--num-fewshot", type=int, default=0, help="examples before each item (default 0)")
    parser.add_argument("--limit", type=int, help="score only the first N items of each language")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    parser.add_argument("--output", required=True, help="results FILE.json (FILE.md and FILE.<task>.png beside it)")
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="leave malformed rows out (counted in the output), not fail",
    )
    parser.add_argument("--seed", type=int, default=1234, help="seed of the few-shot draw (default 1234)")
    parser.add_argument("--num-beams", type=int, default=1, help="generation: 1 greedy, more = beam search")
    parser.add_argument("--max-new-tokens", type=int, help="generation limit (default: per task)")
    parser.add_argument(
        "--prefix-token", default="eos", choices=["eos", "bos"], help="stands in for an empty context (default eos)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: the checkpoint's")
    parser.set_defaults(run=_evaluate)
