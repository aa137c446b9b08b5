"""`polylm self-instruct`: MultiAlpaca-style instruction data from any OpenAI-compatible endpoint (see
docs/selfinstruct.md). Its flags are EndpointConfig's and SelfInstructConfig's fields."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polylm.cli import options
from polylm.errors import PolyLMError
from polylm.selfinstruct.config import EndpointConfig, SelfInstructConfig


def _run(args: argparse.Namespace) -> None:
    from polylm.selfinstruct.generate import self_instruct
    from polylm.selfinstruct.stats import table

    endpoint = EndpointConfig(**options.values(args, EndpointConfig))
    config = SelfInstructConfig(**options.values(args, SelfInstructConfig))
    seeds, seed_tasks = (Path(p) if p else None for p in (args.seeds, args.seed_tasks))
    stats = self_instruct(config, endpoint, Path(args.out), seeds, seed_tasks, progress=not args.no_progress)
    print(table(stats))
    print(f"wrote {args.out}/<lang>.jsonl and {args.out}/stats.json")
    short = [f"{lang} {s.kept}/{s.target}" for lang, s in stats.items() if s.kept < s.target]
    if short:
        print(
            f"polylm: warning: targets not met after {config.rounds_limit} rounds per language: {', '.join(short)}; "
            "run again to continue (raise --max-rounds)",
            file=sys.stderr,
        )
        raise PolyLMError("self-instruct stopped before every language reached --per-language")


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "self-instruct",
        help="generate MultiAlpaca-style instruction data in several languages with an OpenAI-compatible endpoint",
        description="Multilingual self-instruct (PolyLM's MultiAlpaca): rounds of prompts in each target language "
        "with sampled demonstrations, a robust parser and filters (ROUGE-L per language, length, keyword "
        "blacklist, language ID, duplicates). Writes OUT/<lang>.jsonl ({instruction, input, output} per line), "
        "OUT/stats.json and OUT/state.json; run the same command again to resume a stopped run.",
    )
    parser.add_argument("--out", required=True, help="output directory (resumed when it holds an earlier run)")
    parser.add_argument(
        "--seeds", help="directory of <lang>.jsonl seed tasks (MultiAlpaca records); those languages are not translated"
    )
    parser.add_argument(
        "--seed-tasks",
        help="English seed tasks (Self-Instruct seed_tasks.jsonl or Alpaca records) to translate for languages "
        "without seeds; translations are cached in OUT/seeds/<lang>.jsonl",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    options.add_fields(parser.add_argument_group("endpoint"), EndpointConfig)
    options.add_fields(parser.add_argument_group("generation"), SelfInstructConfig, skip=("filters",))
    parser.set_defaults(run=_run)
