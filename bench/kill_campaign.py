"""Kill campaigns: kill -9 a long command many times at random instants, resume it each time, compare the end.

    python bench/kill_campaign.py --target pretrain|finetune|prepare|self-instruct [--kills 20] [--seed 0]

One uninterrupted run is the reference, and calibrates the campaign: how long the command takes to start and to
make each unit of progress (a logged step, a completed datatrove task, a kept self-instruct record). Then the
same command runs in a fresh directory and is killed with SIGKILL (its whole process group) after a random
delay: the start-up plus a random share of the time the work left needs (on average 1/(kills left + 1) of it, so
the kills spread to the end). A guard caps each round's progress at its share of the units left before a margin
short of the total, and kills at once when the run reaches it (the round's trigger says "guard"): a resume can
start faster than the delay expected, and this keeps work for every later round. A round
counts as *landed* only if the process died by SIGKILL (not on its own) and its progress was short of the total
at that moment; it also notes whether the kill fell inside a checkpoint or shard write (a hidden temporary
file or directory present). The next round resumes (`--resume auto`, or the same command for data prepare and
self-instruct, which continue by design); after the last kill one final resume runs to the end. The end:
- pretrain / finetune: the per-step losses of metrics.jsonl `==` the reference's (bit-identical);
- prepare: shards, validation shards, rejects.jsonl byte-identical, and data.json's ledger, counts and
  curriculum equal to the reference's;
- self-instruct (a fake OpenAI-compatible server in this process, tests/selfinstruct_support.py): no record on
  disk at any kill is lost or changed, no record is duplicated, every language holds exactly its target.
Exits 1 unless every kill landed and the end matches. Results: bench/results/kill_campaign_<target>_<date>_cpu.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from _machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CORPUS = REPO / "src" / "polylm" / "resources" / "corpus"
POLYLM = [sys.executable, "-m", "polylm.cli"]


@dataclass
class Round:
    number: int
    delay_s: float  # the random wall-clock delay drawn for this round
    trigger: str  # "time": the delay ran out; "guard": the run reached its round's cap first, and was killed then
    exit_code: int
    progress: int  # units done when the kill came
    total: int
    in_write: bool  # a checkpoint, shard or file write was in flight (its hidden temporary existed)
    landed: bool


@dataclass
class Target:
    """What a campaign needs to know of one command."""

    name: str
    total: int
    command: Callable[[Path, bool], list[str]]  # (out, resuming) -> argv
    progress: Callable[[Path], int]
    in_write: Callable[[Path, float], bool]  # (out, round start): a write begun this round is in flight
    compare: Callable[[Path, Path], dict]  # (reference out, campaign out) -> {"identical": bool, ...}
    margin: int = 3  # progress units kept short of the total by the guard, whatever the kills' timing
    env: dict = field(default_factory=dict)
    close: Callable[[], None] = lambda: None
    during_kill: Callable[[Path], None] = lambda out: None  # what to record at each kill (self-instruct)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _hidden_temporaries(out: Path, since: float) -> bool:
    """A hidden temporary (file or directory) made since `since`: a write the kill interrupts."""
    found = [Path(root) / name for root, dirs, files in os.walk(out) for name in dirs + files
             if name.startswith(".") and ".tmp" in name]  # fmt: skip
    return _made_since(found, since)


def _made_since(paths: list[Path], since: float) -> bool:
    for path in paths:
        try:
            if path.stat().st_mtime >= since:
                return True
        except FileNotFoundError:  # finished (renamed or removed) meanwhile
            continue
    return False


# --- pretrain and finetune -------------------------------------------------------------------------------------


def _prepare_tiny_data(work: Path) -> Path:
    """The embedded corpus (4 languages, one bilingual source), prepared once; its tokenizer serves finetune."""
    data = work / "data"
    if (data / "data.json").exists():
        return data
    sources = "\n".join(f'  - {{name: {lang}, lang: {lang}, paths: ["{CORPUS / (lang + ".txt")}"]}}'
                        for lang in ("en", "zh", "th", "de"))  # fmt: skip
    pairs = f'[{{src_file: "{CORPUS / "de.txt"}", tgt_file: "{CORPUS / "en.txt"}", src_lang: de, tgt_lang: en}}]'
    config = work / "data.yaml"
    config.write_text(
        f"sources:\n{sources}\n  - {{name: pairs, parallel: {pairs}}}\npipeline: {{minhash_threshold: null}}\n"
        "tokenizer: {vocab_size: 1500}\ncurriculum: {total_tokens: 40960, switch_fraction: 0.5, seq_len: 64}\n"
        "validation_fraction: 0.15\n"
    )
    _run_quietly([*POLYLM, "data", "prepare", "--config", str(config), "--out", str(data)])
    return data


def _run_quietly(argv: list[str]) -> None:
    """A setup command; its output only if it fails."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:4])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _compare_losses(reference: Path, out: Path) -> dict:
    expected, got = _losses(reference), _losses(out)
    first = next((i + 1 for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), None)
    return {"identical": expected == got, "steps": len(got), "reference_steps": len(expected),
            "first_differing_step": first}  # fmt: skip


def _train_target(name: str, verb: str, config: Path, steps: int) -> Target:
    def command(out: Path, resuming: bool) -> list[str]:
        return [*POLYLM, verb, "--config", str(config), "--out", str(out), *(["--resume", "auto"] if resuming else [])]

    def in_write(out: Path, since: float) -> bool:
        """A checkpoint being written, replaced or rotated out, begun this round."""
        folder = out / "checkpoints"
        return folder.exists() and _made_since(list(folder.glob(".step-*")), since)

    return Target(name, steps, command, lambda out: _lines(out / "metrics.jsonl"), in_write, _compare_losses)


def pretrain_target(work: Path, steps: int) -> Target:
    data = _prepare_tiny_data(work)
    config = work / "pretrain.yaml"
    config.write_text(
        f"preset: tiny\ndata: {data}\nmodel: {{overrides: {{num_layers: 2, hidden_size: 128, num_heads: 4}}}}\n"
        f"batch: {{global_tokens: 1024, micro_batch: 4}}\noptim: {{lr: 0.003, warmup_steps: 3, decay_steps: {steps}}}\n"
        f"run: {{max_steps: {steps}, checkpoint_every: 1, keep_last: 2, eval_every: 10}}\n"
    )
    return _train_target("pretrain", "pretrain", config, steps)


def finetune_target(work: Path, steps: int) -> Target:
    from polylm.config import preset
    from polylm.hf_checkpoint import save_model
    from polylm.model import build_model
    from polylm.tokenizer import Tokenizer

    data = _prepare_tiny_data(work)
    base = work / "base"
    if not (base / "config.json").exists():
        tokenizer = Tokenizer.from_dir(data / "tokenizer")
        shape = dict(vocab_size=tokenizer.vocab_size, num_layers=2, hidden_size=64, num_heads=4,
                     max_position_embeddings=256)  # fmt: skip
        save_model(build_model(preset("tiny").replace(**shape), seed=3), base, tokenizer=tokenizer)
    instructions = work / "instructions"
    if not (instructions / "stats.json").exists():
        multialpaca = SHARED / "instructions" / "multialpaca"
        sources = ",".join(f'{{name: {lang}, format: alpaca, max_records: 300, paths: [{{path: "{multialpaca}/'
                           f'{lang}.jsonl", lang: {lang}}}]}}' for lang in ("es", "ja"))  # fmt: skip
        (work / "mix.yaml").write_text(f"sources: [{sources}]\nvalidation_fraction: 0.1\nlanguage_id: false\n")
        _run_quietly([*POLYLM, "instruct", "prepare", "--config", str(work / "mix.yaml"), "--out", str(instructions)])
    config = work / "finetune.yaml"
    config.write_text(json.dumps({
        "model": {"path": str(base)}, "data": str(instructions),
        "sft": {"template": "multialpaca", "seq_len": 256, "packing": True, "epochs": 3},
        "batch": {"global_tokens": 2048, "micro_batch": 8}, "optim": {"lr": 3e-3, "warmup_steps": 3},
        "run": {"max_steps": steps, "checkpoint_every": 1, "keep_last": 2, "eval_every": 10, "eval_tokens": 2000},
    }))  # fmt: skip
    return _train_target("finetune", "finetune", config, steps)


# --- data prepare --------------------------------------------------------------------------------------------


def _digest(out: Path) -> dict:
    """sha256 of every shard, validation shard and rejects.jsonl, plus data.json's content keys."""
    files = {}
    for folder in ("shards", "validation"):
        for path in sorted((out / folder).rglob("*")) if (out / folder).exists() else []:
            if path.is_file():
                files[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()
    if (out / "rejects.jsonl").exists():
        files["rejects.jsonl"] = hashlib.sha256((out / "rejects.jsonl").read_bytes()).hexdigest()
    summary = json.loads((out / "data.json").read_text())
    keys = ("ledger", "kept", "sources", "validation", "fingerprint", "stages", "epochs")
    return {"files": files, "summary": {key: summary.get(key) for key in keys}}


def prepare_target(work: Path, tasks: int) -> Target:
    config = REPO / "examples" / "data" / "curriculum.yaml"
    stage_tasks = {"clean": tasks, "buckets": tasks, "resolve": 1, "filter": tasks, "tokenizer": 1,
                   "tokenize": tasks, "finalize": 1}  # fmt: skip

    def command(out: Path, resuming: bool) -> list[str]:
        return [*POLYLM, "data", "prepare", "--config", str(config), "--out", str(out), "--executor", "local",
                "--tasks", str(tasks), "--workers", "2"]  # fmt: skip

    def progress(out: Path) -> int:
        logs = out / "logs"
        return sum(len(list((logs / stage / "completions").glob("*"))) for stage in stage_tasks
                   if (logs / stage / "completions").is_dir())  # fmt: skip

    def compare(reference: Path, out: Path) -> dict:
        expected, got = _digest(reference), _digest(out)
        differing = sorted(k for k in expected["files"].keys() | got["files"].keys()
                           if expected["files"].get(k) != got["files"].get(k))  # fmt: skip
        summary_equal = expected["summary"] == got["summary"]
        return {"identical": not differing and summary_equal, "files": len(got["files"]),
                "differing_files": differing[:10], "summary_equal": summary_equal}  # fmt: skip

    return Target("prepare", sum(stage_tasks.values()), command, progress, _hidden_temporaries, compare, margin=2)


# --- self-instruct -------------------------------------------------------------------------------------------


def selfinstruct_target(work: Path, per_language: int) -> Target:
    sys.path.insert(0, str(REPO / "tests"))
    from selfinstruct_support import FakeOpenAI, write_seeds

    languages = ("es", "ja", "th")
    seeds = write_seeds(work / "seeds", languages)
    fake = FakeOpenAI(fault_rate=0.1, faults=("429", "500", "garbage"), delay=0.05, tasks_per_answer=2)
    fake.httpd.handle_error = lambda request, address: None  # a killed client resets its connections: expected
    fake.__enter__()
    seen: list[dict[str, list[str]]] = []  # the complete lines of every language file at each kill

    def command(out: Path, resuming: bool) -> list[str]:
        return [*POLYLM, "self-instruct", "--endpoint", fake.url, "--model", "fake-model", "--languages",
                ",".join(languages), "--per-language", str(per_language), "--out", str(out), "--no-progress",
                "--timeout", "2", "--backoff", "0.01", "--retries", "40", "--concurrency", "3", "--max-rounds",
                "400", "--seeds", str(seeds)]  # fmt: skip

    def lines(out: Path) -> dict[str, list[str]]:
        found = {}
        for lang in languages:
            path = out / f"{lang}.jsonl"
            text = path.read_text(encoding="utf-8") if path.exists() else ""
            found[lang] = text[: text.rfind("\n") + 1].splitlines()
        return found

    def progress(out: Path) -> int:
        return sum(len(kept) for kept in lines(out).values())

    def compare(reference: Path, out: Path) -> dict:
        final = lines(out)
        lost = sum(1 for snapshot in seen for lang, kept in snapshot.items() if final[lang][: len(kept)] != kept)
        instructions = [json.loads(line)["instruction"] for kept in final.values() for line in kept]
        duplicated = len(instructions) - len(set(instructions))
        counts = {lang: len(kept) for lang, kept in final.items()}
        state = json.loads((out / "stats.json").read_text())
        on_target = all(n == per_language for n in counts.values()) and all(
            state["languages"][lang]["kept"] == per_language for lang in languages
        )
        return {"identical": lost == 0 and duplicated == 0 and on_target, "lost_snapshots": lost,
                "duplicated_records": duplicated, "records": counts, "on_target": on_target,
                "reference_records": progress(reference)}  # fmt: skip

    return Target("self-instruct", per_language * len(languages), command, progress, _hidden_temporaries, compare,
                  margin=6,
                  close=lambda: fake.__exit__(None, None, None),
                  during_kill=lambda out: seen.append(lines(out)))  # fmt: skip


# --- the campaign ----------------------------------------------------------------------------------------------


def _start(target: Target, out: Path, resuming: bool, log: Path) -> subprocess.Popen:
    with log.open("ab") as sink:
        return subprocess.Popen(target.command(out, resuming), stdout=subprocess.DEVNULL, stderr=sink,
                                start_new_session=True, env={**os.environ, **target.env})  # fmt: skip


def _reference(target: Target, out: Path, log: Path) -> tuple[float, float]:
    """Run to the end once: (seconds to the first unit of progress, seconds in all)."""
    started = time.monotonic()
    process = _start(target, out, False, log)
    first = None
    while process.poll() is None:
        if first is None and target.progress(out) > 0:
            first = time.monotonic() - started
        time.sleep(0.02)
    if process.returncode != 0:
        raise SystemExit(f"the reference run failed (exit {process.returncode}); see {log}")
    total = time.monotonic() - started
    return (first if first is not None else total * 0.5), total


def campaign(target: Target, work: Path, kills: int, seed: int) -> dict:
    """Kill `target` `kills` times in `work/killed`, resume to the end, and compare with `work/reference`."""
    rng = random.Random(seed)
    log = work / "stderr.log"
    startup, whole = _reference(target, work / "reference", log)
    per_unit = max(whole - startup, 1e-3) / target.total
    out = work / "killed"
    rounds: list[Round] = []
    for number in range(1, kills + 1):
        done = target.progress(out)
        # On average each round does 1/(kills left + 1) of the work left, so the kills spread to the end.
        share = rng.uniform(0, 2 / (kills - number + 2))
        delay = startup * rng.uniform(0.5, 1.0) + share * (target.total - done) * per_unit
        # The guard: a round may use at most its share of the units left before the margin, so every later round
        # still finds work to interrupt however fast the run goes (the random delay usually comes first).
        kills_left = kills - number + 1
        guard = done + max(1, (target.total - target.margin - done) // kills_left)
        began = time.time()
        process = _start(target, out, number > 1, log)
        deadline, advanced, trigger = time.monotonic() + delay, None, "time"
        while time.monotonic() < deadline and process.poll() is None:
            progress = target.progress(out)
            if advanced is None and progress > done:
                advanced = time.monotonic() - (deadline - delay)
            if progress >= guard:
                trigger = "guard"
                break
            time.sleep(0.01)
        in_write = target.in_write(out, began)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        target.during_kill(out)
        progress = target.progress(out)
        landed = process.returncode == -signal.SIGKILL and progress < target.total
        rounds.append(Round(number, round(delay, 3), trigger, process.returncode, progress, target.total, in_write,
                            landed))  # fmt: skip
        print(
            f"kill {number:>2}/{kills}: after {delay:6.2f} s{' (guard)' if trigger == 'guard' else ''}, exit "
            f"{process.returncode}, progress {progress}/{target.total}{', inside a write' if in_write else ''}"
            f"{'' if landed else '  NOT LANDED'}",
            flush=True,
        )
        # A resume starts slower than a fresh run (it loads its state): learn its start-up from what was seen.
        startup = advanced if advanced is not None else min(startup * 1.5, whole)
    final = _start(target, out, True, log)
    if final.wait() != 0:
        raise SystemExit(f"the final resume failed (exit {final.returncode}); see {log}")
    result = target.compare(work / "reference", out)
    target.close()
    return {"rounds": [asdict(r) for r in rounds], "landed": sum(r.landed for r in rounds), "kills": kills,
            "inside_a_write": sum(r.in_write for r in rounds), "by_guard": sum(r.trigger == "guard" for r in rounds),
            "reference_seconds": round(whole, 2),
            "startup_seconds": round(startup, 2), "end": result}  # fmt: skip


TARGETS = {
    "pretrain": lambda work, size: pretrain_target(work, size or 30),
    "finetune": lambda work, size: finetune_target(work, size or 30),
    "prepare": lambda work, size: prepare_target(work, size or 4),
    "self-instruct": lambda work, size: selfinstruct_target(work, size or 60),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=sorted(TARGETS), required=True)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--size", type=int, help="steps (pretrain, finetune: 30), tasks per stage (prepare: 4), "
                        "records per language (self-instruct: 60)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill delays")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a new one under /tmp)")
    parser.add_argument("--out", type=Path, help="results JSON (default: bench/results/...)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix=f"kill-{args.target}-"))
    work.mkdir(parents=True, exist_ok=True)
    target = TARGETS[args.target](work, args.size)
    result = campaign(target, work, args.kills, args.seed)
    end = result["end"]
    ok = result["landed"] == args.kills and end["identical"]
    print(
        f"{args.target}: {result['landed']}/{args.kills} kills landed mid-run ({result['inside_a_write']} inside a "
        f"write); end {'identical to' if end['identical'] else 'DIFFERS from'} the uninterrupted run: {end}"
    )
    record = {"benchmark": "kill_campaign", "target": args.target, "date": date.today().isoformat(),
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
              "seed": args.seed, "passed": ok, **result}  # fmt: skip
    out = args.out or REPO / "bench" / "results" / f"kill_campaign_{args.target}_{date.today().isoformat()}_cpu.json"
    out.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
