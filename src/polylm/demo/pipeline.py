"""`polylm demo`: the PolyLM recipe at tiny scale, stage by stage, through the real CLI verbs.

tokenizer + bilingual data + curriculum (`data prepare`) → `pretrain` → `export` → `instruct prepare` → `finetune`
→ `export` → `evaluate` → `generate` → report. Every stage is the verb a user would type, called with a config file
the demo writes to `RUN/configs/`. A stage that finished leaves `RUN/stages/<name>.done`; rerunning the command
skips those and resumes a training stage from its last checkpoint (`--resume auto`), so Ctrl-C loses at most the
step in flight.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from polylm.cli import main as polylm
from polylm.demo import corpus
from polylm.errors import PolyLMError
from polylm.train.checkpointing import list_checkpoints

SEQ_LEN = 128
GLOBAL_TOKENS = 16 * SEQ_LEN
PRETRAIN_STEPS = 400
FINETUNE_STEPS = 100
SFT_SEQ_LEN = 256
SAMPLE_LANGUAGES = ("en", "zh", "es", "ar", "ja", "th", "ru")


@dataclass
class Demo:
    out: Path
    minutes: float = 7.0
    """Training time budget: 70% for pretraining, 30% for instruction tuning (each also stops at its step count)."""
    benchmarks: Path | None = None
    """A benchmark folder with `xcopa/` (e.g. ../shared/data/benchmarks); XCOPA is skipped without one."""
    seed: int = 1234

    @property
    def configs(self) -> Path:
        return self.out / "configs"

    def run_verb(self, *argv: str, capture: bool = False) -> str:
        """One `polylm` command line; a failure stops the demo, an interrupted training exits like Ctrl-C."""
        output = io.StringIO()
        with contextlib.redirect_stdout(output) if capture else contextlib.nullcontext():
            code = polylm(list(argv))
        if code == 130:
            raise KeyboardInterrupt
        if code != 0:
            raise PolyLMError(f"demo: `polylm {' '.join(argv)}` failed (exit {code}); fix it and rerun to resume")
        return output.getvalue()

    def write_config(self, name: str, config: dict) -> Path:
        self.configs.mkdir(parents=True, exist_ok=True)
        path = self.configs / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return path

    def stage(self, name: str, work: Callable[[], None]) -> None:
        marker = self.out / "stages" / f"{name}.done"
        if marker.exists():
            print(f"== {name}: done before, skipped")
            return
        print(f"== {name}")
        started = time.perf_counter()
        work()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"seconds": time.perf_counter() - started}) + "\n")

    # -- stages ------------------------------------------------------------------------------------------------

    def data(self) -> None:
        text = corpus.write_training_text(self.out / "corpus")
        total = PRETRAIN_STEPS * GLOBAL_TOKENS
        curriculum = {"preset": "polylm", "switch_fraction": 0.5, "seed": self.seed}
        config = corpus.data_config(text, self.configs / "data.yaml", total, SEQ_LEN, curriculum)
        self.run_verb("data", "prepare", "--config", str(config), "--out", str(self.out / "data"))

    def pretrain(self) -> None:
        config = self.write_config("pretrain", pretrain_config(self.out / "data", self.seed, PRETRAIN_STEPS))
        budget = f"run.max_minutes={0.7 * self.minutes}"
        self.run_verb("pretrain", "--config", str(config), "--out", str(self.out / "pretrain"), "--resume", "auto",
                      budget)  # fmt: skip
        self.run_verb("plot", str(self.out / "pretrain"))
        self.run_verb("export", str(list_checkpoints(self.out / "pretrain")[-1]), "--out", str(self.out / "base"))

    def instruct(self) -> None:
        sources = [
            {"name": path.stem, "format": "alpaca", "paths": [{"path": str(path), "lang": path.stem}]}
            for path in sorted(corpus.INSTRUCTIONS.glob("*.jsonl"))
        ]
        mixture = {"sources": sources, "language_id": False, "validation_fraction": 0.2, "seed": self.seed}
        config = self.write_config("instruct", mixture)
        self.run_verb("instruct", "prepare", "--config", str(config), "--out", str(self.out / "instruct"))

    def finetune(self) -> None:
        config = self.write_config(
            "finetune",
            {
                "model": {"path": str(self.out / "base")},
                "data": str(self.out / "instruct"),
                "sft": {"template": "multialpaca", "seq_len": SFT_SEQ_LEN, "packing": True, "epochs": 200},
                "batch": {"global_tokens": 8 * SFT_SEQ_LEN, "micro_batch": 8},
                "optim": {"lr": 2e-3, "warmup_steps": 10},
                "run": {"max_steps": FINETUNE_STEPS, "checkpoint_every": 20, "eval_every": 20, "seed": self.seed},
            },
        )
        budget = f"run.max_minutes={0.3 * self.minutes}"
        self.run_verb("finetune", "--config", str(config), "--out", str(self.out / "finetune"), "--resume", "auto",
                      budget)  # fmt: skip
        self.run_verb("plot", str(self.out / "finetune"))
        self.run_verb("export", str(list_checkpoints(self.out / "finetune")[-1]), "--out", str(self.out / "tuned"))

    def evaluate(self) -> None:
        eval_data = corpus.write_flores(self.out / "eval-data")
        directions = [
            f"{a}-{b}" for lang in corpus.languages() if lang != "en" for a, b in (("en", lang), (lang, "en"))
        ]
        self.run_verb("evaluate", "--model", str(self.out / "base"), "--tasks", "flores", "--data-dir", str(eval_data),
                      "--languages", ",".join(directions), "--max-new-tokens", "48",
                      "--output", str(self.out / "eval" / "translation.json"), capture=True)  # fmt: skip
        xcopa = [p.name for p in sorted((self.benchmarks or Path("/nonexistent")).glob("xcopa/*")) if p.is_dir()]
        if xcopa:
            self.run_verb("evaluate", "--model", str(self.out / "base"), "--tasks", "xcopa",
                          "--data-dir", str(self.benchmarks), "--languages", ",".join(xcopa), "--limit", "100",
                          "--output", str(self.out / "eval" / "xcopa.json"), capture=True)  # fmt: skip

    def samples(self) -> None:
        records = []
        for lang in SAMPLE_LANGUAGES:
            first = json.loads((corpus.INSTRUCTIONS / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()[0])
            query = f"{first['instruction']}\n{corpus.held_out_lines(lang)[0]}"  # an unseen sentence
            output = self.run_verb("generate", "--model", str(self.out / "tuned"), "--template", "multialpaca",
                                   "--prompt", query, "--max-new-tokens", "40", "--json", capture=True)  # fmt: skip
            records.append({"lang": lang, "prompt": query, "output": json.loads(output.splitlines()[-1])})
        (self.out / "samples.json").write_text(json.dumps(records, ensure_ascii=False, indent=2) + "\n")

    def report(self) -> None:
        from polylm.demo.report import write_report

        path = write_report(self.out)
        print(f"report: {path}")


def pretrain_config(data_dir: Path, seed: int, steps: int) -> dict:
    return {
        "preset": "tiny",
        "data": str(data_dir),
        "batch": {"global_tokens": GLOBAL_TOKENS, "micro_batch": 16},
        "optim": {"lr": 2e-3, "warmup_steps": 20},
        "run": {"max_steps": steps, "checkpoint_every": 50, "eval_every": 50, "seed": seed},
    }


def run_demo(demo: Demo) -> Path:
    """All stages in order; returns the report's path."""
    demo.out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The embedded corpus is small by design: the curriculum reuses every source many times over.
        warnings.filterwarnings("ignore", message="curriculum: source")
        for name in ("data", "pretrain", "instruct", "finetune", "evaluate", "samples"):
            demo.stage(name, getattr(demo, name))
    demo.report()
    return demo.out / "report.md"
