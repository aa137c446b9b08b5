"""`polylm demo`: tokenizer → data + curriculum → pretraining → instruction tuning → evaluation → generation."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_BENCHMARKS = Path("../shared/data/benchmarks")


def _demo(args: argparse.Namespace) -> None:
    from polylm.demo.pipeline import Demo, run_demo

    benchmarks = Path(args.data_dir) if args.data_dir else DEFAULT_BENCHMARKS if DEFAULT_BENCHMARKS.is_dir() else None
    demo = Demo(Path(args.out).resolve(), minutes=args.minutes, benchmarks=benchmarks, seed=args.seed)
    try:
        if args.ablation:
            from polylm.demo.ablation import run_ablation

            path = run_ablation(demo, seeds=args.seeds, steps=args.steps)
            print(path.read_text(encoding="utf-8"))
        else:
            path = run_demo(demo)
    except KeyboardInterrupt:
        print(f"\ninterrupted: rerun the same command to resume ({args.out}/stages lists the finished stages)")
        raise
    print(f"wrote {path}")


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "demo",
        help="the whole PolyLM recipe at tiny scale on the embedded corpus, with a report",
        description="Train a tokenizer and prepare bilingual data with the 30%% -> 60%% non-English curriculum, "
        "pretrain the tiny preset, tune it on MultiAlpaca-style instructions, evaluate (held-out perplexity, "
        "translation BLEU/chrF, XCOPA when benchmark data is there) and generate in several languages. Every "
        "stage is a polylm verb; rerunning after Ctrl-C resumes. Writes RUN_DIR/report.md.",
    )
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument(
        "--minutes", type=float, default=7.0, help="training time budget, 70%% pretraining, 30%% tuning (default 7)"
    )
    parser.add_argument(
        "--data-dir", help=f"benchmark folder with xcopa/ (default {DEFAULT_BENCHMARKS} when it exists)"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--ablation", action="store_true", help="curriculum vs a flat stage-1 mix, --seeds runs each, same budget"
    )
    parser.add_argument("--seeds", type=int, default=3, help="ablation: seeds per arm (default 3)")
    parser.add_argument("--steps", type=int, default=200, help="ablation: pretraining steps per run (default 200)")
    parser.set_defaults(run=_demo)
