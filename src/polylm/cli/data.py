"""`polylm data prepare|stats`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _data_prepare(args: argparse.Namespace) -> None:
    from polylm.data.prepare import load_config, prepare
    from polylm.errors import PolyLMError

    config = load_config(Path(args.config))
    if args.format not in ("polylm", "megatron"):
        raise PolyLMError(f"--format {args.format!r} is not one of polylm, megatron")
    config.megatron = config.megatron or args.format == "megatron"
    if args.executor is None:
        if args.tasks is not None:
            raise PolyLMError("--tasks needs --executor local|slurm|ray (the in-process path is one task)")
        if args.workers is not None:
            config.workers = args.workers
        summary = prepare(config, Path(args.out), Path(args.config))
    else:
        from polylm.data import executors

        for name in ("tasks", "workers"):
            if getattr(args, name) is not None:
                setattr(config.executor, name, getattr(args, name))
        summary = executors.run(config, Path(args.out), Path(args.config), args.executor)
        if summary is None:
            print(f"submitted the stages of {args.out} to Slurm (logs: {args.out}/logs/STAGE); when the finalize "
                  f"job has run: polylm data stats {args.out}")  # fmt: skip
            return
    ledger = summary["ledger"]
    print(
        f"wrote {args.out}: {sum(s['tokens'] for s in summary['sources']):,} tokens in {len(summary['sources'])} "
        f"sources; dropped {sum(ledger['drops'].values()):,} documents, {sum(ledger['errors'].values()):,} input "
        f"errors (polylm data stats {args.out})"
    )


def _data_stats(args: argparse.Namespace) -> None:
    from polylm.data.stats import stats, table

    report = stats(Path(args.dir))
    print(json.dumps(report, ensure_ascii=False) if args.json else table(report))


def register(verbs: argparse._SubParsersAction) -> None:
    data = verbs.add_parser("data", help="prepare pretraining data: clean, tokenize, shard, mix by curriculum")
    data_verbs = data.add_subparsers(dest="data_verb", required=True, metavar="VERB")
    prepare = data_verbs.add_parser(
        "prepare",
        help="run a data config: readers, cleaning, bilingual documents, tokenizer, shards, curriculum",
        description="Run the data pipeline a YAML config describes (see examples/data/curriculum.yaml and "
        "docs/data.md). Every dropped document is counted by reason; the resolved config and the statistics "
        "go to OUT/data.json. With --executor, the same pipeline runs as stages of tasks on datatrove's "
        "executors, with the same result (docs/data.md).",
    )
    prepare.add_argument("--config", required=True, help="YAML data config")
    prepare.add_argument("--out", required=True, help="output directory")
    prepare.add_argument(
        "--executor",
        help="run as stages of tasks on datatrove's executor: local (processes on this machine), slurm (job "
        "arrays, settings in the config's executor.slurm), ray (a running cluster, executor.ray.address); "
        "default: in this process. Rerunning the same command resumes: completed tasks are skipped",
    )
    prepare.add_argument(
        "--format",
        default="polylm",
        help="polylm (token shards, always written) or megatron: also Megatron-LM's indexed datasets "
        "(OUT/megatron/SOURCE_text_document.bin/.idx) and a --data-path blend per curriculum stage in data.json",
    )
    prepare.add_argument("--tasks", type=int, help="with --executor: tasks per stage (default: executor.tasks)")
    prepare.add_argument(
        "--workers",
        type=int,
        help="with --executor: tasks running at once (default: executor.workers); without: tokenizer processes "
        "(default: the config's workers)",
    )
    prepare.set_defaults(run=_data_prepare)
    data_stats = data_verbs.add_parser(
        "stats",
        help="tokens per language and source, drops by reason, realized share per curriculum stage",
        description="Summarise a directory written by `polylm data prepare`.",
    )
    data_stats.add_argument("dir", help="directory written by `polylm data prepare`")
    data_stats.add_argument("--json", action="store_true", help="one JSON object (drops, tokens, stages, ...)")
    data_stats.set_defaults(run=_data_stats)
