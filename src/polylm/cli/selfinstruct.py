"""`polylm self-instruct`: MultiAlpaca-style instruction data from any OpenAI-compatible endpoint (see
docs/selfinstruct.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from polylm.cli import options
from polylm.errors import PolyLMError
from polylm.selfinstruct.config import SelfInstructConfig


def _run(args: argparse.Namespace) -> None:
    from polylm.selfinstruct.client import ChatClient, RetryPolicy
    from polylm.selfinstruct.generate import SelfInstruct
    from polylm.selfinstruct.seeds import read_seed_file
    from polylm.selfinstruct.state import Store
    from polylm.selfinstruct.stats import table

    for name in ("timeout", "backoff", "retries"):
        if getattr(args, name) <= 0:
            raise PolyLMError(f"--{name} must be positive, got {getattr(args, name)}")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise PolyLMError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    config = SelfInstructConfig(**options.values(args, SelfInstructConfig))
    seeds_dir = Path(args.seeds) if args.seeds else None
    if seeds_dir is not None and not seeds_dir.is_dir():
        raise PolyLMError(f"--seeds {seeds_dir}: not a directory")
    english = None
    if args.seed_tasks:
        if not Path(args.seed_tasks).is_file():
            raise PolyLMError(f"--seed-tasks {args.seed_tasks}: no such file")
        english = read_seed_file(Path(args.seed_tasks))
    store = Store(Path(args.out))
    try:

        async def main() -> dict:
            client = ChatClient(
                args.endpoint,
                args.model,
                api_key=api_key,
                concurrency=args.concurrency,
                timeout=args.timeout,
                retry=RetryPolicy(attempts=args.retries, backoff=args.backoff),
            )
            try:
                run = SelfInstruct(config, client, store, seeds_dir, english, progress=not args.no_progress)
                return await run.run()
            finally:
                await client.aclose()

        stats = asyncio.run(main())
    finally:
        store.close()
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
    parser.add_argument("--endpoint", required=True, help="server URL, e.g. http://127.0.0.1:8000 (or .../v1)")
    parser.add_argument("--model", required=True, help="model name sent with each request")
    parser.add_argument("--out", required=True, help="output directory (resumed when it holds an earlier run)")
    parser.add_argument(
        "--seeds", help="directory of <lang>.jsonl seed tasks (MultiAlpaca records); those languages are not translated"
    )
    parser.add_argument(
        "--seed-tasks",
        help="English seed tasks (Self-Instruct seed_tasks.jsonl or Alpaca records) to translate for languages "
        "without seeds; translations are cached in OUT/seeds/<lang>.jsonl",
    )
    parser.add_argument("--api-key-env", help="environment variable holding the API key (default: no key is sent)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at most (default 4)")
    options.add_fields(parser, SelfInstructConfig, skip=("filters",))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    parser.add_argument("--retries", type=int, default=8, help="tries per request (default 8)")
    parser.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry, doubled after")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run)
