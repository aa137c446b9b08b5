"""`polylm instruct prepare|stats`: the instruction mixture."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _prepare(args: argparse.Namespace) -> None:
    from polylm.instruct.mixture import load_config
    from polylm.instruct.prepare import prepare

    stats = prepare(load_config(Path(args.config)), Path(args.out), Path(args.config), strict=args.strict)
    total = stats["total"]
    print(
        f"wrote {args.out}: {total['train']:,} train and {total['validation']:,} validation conversations of "
        f"{total['read']:,} read; dropped {sum(total['dropped'].values()):,}, malformed {total['malformed']:,} "
        f"(polylm instruct stats {args.out})"
    )
    for name, source in stats["sources"].items():
        if source["kept"] == 0:
            reasons = {**source["dropped"], **source["malformed"]}
            top = max(reasons, key=reasons.get) if reasons else "no records"
            print(f"polylm: warning: source {name!r} kept no conversation (mostly: {top})", file=sys.stderr)


def _stats(args: argparse.Namespace) -> None:
    from polylm.instruct.prepare import load_stats
    from polylm.instruct.stats import table

    stats = load_stats(Path(args.dir))
    print(json.dumps(stats, ensure_ascii=False) if args.json else table(stats))


def register(verbs: argparse._SubParsersAction) -> None:
    instruct = verbs.add_parser("instruct", help="prepare instruction-tuning data: load, filter, mix, split")
    instruct_verbs = instruct.add_subparsers(dest="instruct_verb", required=True, metavar="VERB")
    prepare = instruct_verbs.add_parser(
        "prepare",
        help="run a mixture config: public instruction sets -> conversations in train/validation JSONL",
        description="Read the instruction sets a YAML mixture config lists (see examples/instruct/ and "
        "docs/instruct.md), drop and count by reason (malformed records with FILE:LINE), and write "
        "OUT/train.jsonl, OUT/validation.jsonl, OUT/stats.json, OUT/dropped.jsonl and OUT/mixture.json. "
        "Malformed records are counted and skipped unless --strict.",
    )
    prepare.add_argument("--config", required=True, help="YAML mixture config")
    prepare.add_argument("--out", required=True, help="output directory")
    prepare.add_argument(
        "--strict", action="store_true", help="stop with an error (exit 1) at the first malformed record"
    )
    prepare.set_defaults(run=_prepare)
    stats = instruct_verbs.add_parser(
        "stats",
        help="per source and language: read, kept, dropped by reason; malformed records",
        description="Summarise a directory written by `polylm instruct prepare`.",
    )
    stats.add_argument("dir", help="directory written by `polylm instruct prepare`")
    stats.add_argument("--json", action="store_true", help="print stats.json as one line")
    stats.set_defaults(run=_stats)
