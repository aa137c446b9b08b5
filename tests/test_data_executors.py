"""`polylm data prepare --executor local|slurm|ray`: the staged pipeline on datatrove's executors gives what the
in-process path gives, dedups across tasks, resumes after kill -9, and refuses what cannot run in one line."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA
from polylm.cli import main

EXAMPLE = REPO / "examples" / "data" / "curriculum.yaml"
BIN = Path(sys.executable).parent
needs_corpora = pytest.mark.skipif(not (SHARED_DATA / "corpora").is_dir(), reason="../shared/data/corpora is absent")
pytestmark = pytest.mark.filterwarnings("ignore:curriculum. source")


def _polylm(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.Popen([str(BIN / "polylm"), *args], env=environment, **kwargs)


def _run(*args: str, env: dict | None = None) -> None:
    process = _polylm(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]


def _clean_text(out: Path, name: str, validation: bool) -> bytes:
    """A source's kept documents: clean/NAME.jsonl in-process, clean/NAME/NNNNN.jsonl parts when staged."""
    single = out / "clean" / f"{name}{'.val' if validation else ''}.jsonl"
    if single.exists():
        return single.read_bytes()
    parts = sorted(p for p in (out / "clean" / name).glob("*.jsonl") if p.name.endswith(".val.jsonl") == validation)
    return b"".join(part.read_bytes() for part in parts)


def assert_same_result(expected: Path, got: Path) -> None:
    """Same kept documents, drops by reason, byte-identical shards and rejects, same curriculum."""
    for folder in ("shards", "validation"):
        assert (expected / folder).exists() == (got / folder).exists(), folder
        if not (expected / folder).exists():
            continue
        comparison = filecmp.dircmp(expected / folder, got / folder)
        assert set(comparison.left_list) == set(comparison.right_list)
        for sub in comparison.left_list:
            names = sorted(p.name for p in (expected / folder / sub).iterdir())
            assert names == sorted(p.name for p in (got / folder / sub).iterdir())
            _, mismatch, errors = filecmp.cmpfiles(expected / folder / sub, got / folder / sub, names, shallow=False)
            assert not mismatch and not errors, (folder, sub, mismatch, errors)
    if (expected / "rejects.jsonl").exists():
        assert (expected / "rejects.jsonl").read_bytes() == (got / "rejects.jsonl").read_bytes()
    a, b = (json.loads((path / "data.json").read_text()) for path in (expected, got))
    for key in ("ledger", "kept", "sources", "validation", "fingerprint", "stages", "epochs"):
        assert a[key] == b[key], key
    for source in a["config"]["sources"]:
        for validation in (False, True):
            assert _clean_text(expected, source["name"], validation) == _clean_text(got, source["name"], validation)
    assert not (got / "work").exists(), "intermediate files left behind"


@pytest.fixture(scope="module")
def in_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("in-process") / "data"
    assert main(["data", "prepare", "--config", str(EXAMPLE), "--out", str(out)]) == 0
    return out


@pytest.mark.slow
@needs_corpora
def test_local_executor_equals_in_process(in_process, tmp_path):
    out = tmp_path / "staged"
    _run("data", "prepare", "--config", str(EXAMPLE), "--out", str(out), "--executor", "local", "--tasks", "4",
         "--workers", "2")  # fmt: skip
    assert_same_result(in_process, out)
    summary = json.loads((out / "data.json").read_text())
    assert summary["run"]["executor"] == "local" and summary["run"]["tasks"] == 4
    assert summary["ledger"]["drops"]["dedup:near"] > 0  # the example does exercise dedup
    for stage in ("clean", "buckets", "resolve", "filter", "tokenizer", "tokenize", "finalize"):
        tasks = 1 if stage in ("resolve", "tokenizer", "finalize") else 4
        assert len(list((out / "logs" / stage / "completions").iterdir())) == tasks


def _near_duplicate_config(tmp_path: Path, corpus_tokenizer) -> tuple[Path, list[str]]:
    """Four input files of one source (with 4 tasks, one per task); file 0 holds a 200-word document at line 3,
    files 1-3 each a copy of it with one word changed. Returns the config and the planted documents' ids."""
    sentences = (SHARED_DATA / "corpora" / "leipzig_sentences" / "en.txt").read_text(encoding="utf-8").splitlines()
    words = " ".join(sentences[200:260]).split()[:200]
    planted = []
    for number in range(4):
        variant = list(words)
        if number:
            variant[150 + 10 * number] = ["harbour", "lantern", "meadow"][number - 1]
        lines = sentences[number * 20 : number * 20 + 20]
        lines.insert(2, " ".join(variant))
        path = tmp_path / f"part-{number}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        planted.append(f"{path}:3")
    paths = ", ".join(f'"{tmp_path / f"part-{n}.txt"}"' for n in range(4))
    config = tmp_path / "near.yaml"
    config.write_text(
        f"sources:\n  - {{name: web, lang: en, paths: [{paths}]}}\n"
        f'  - {{name: de, lang: de, paths: ["{REPO / "src" / "polylm" / "resources" / "corpus" / "de.txt"}"]}}\n'
        f"pipeline: {{rejects: true}}\ntokenizer: {{path: {corpus_tokenizer.model_file.parent}}}\n"
        "curriculum: {total_tokens: 20000, seq_len: 64}\n",
        encoding="utf-8",
    )
    return config, planted


@needs_corpora
@pytest.mark.parametrize("bucket_rows", [None, 7])
def test_near_duplicates_in_different_tasks_leave_one(tmp_path, corpus_tokenizer, monkeypatch, bucket_rows):
    """Also with dedup partitions sorted in many passes (7 rows at a time): the same result."""
    if bucket_rows:
        monkeypatch.setattr("polylm.data.stages.BUCKET_ROWS", bucket_rows)  # --workers 1 runs in this process
    config, planted = _near_duplicate_config(tmp_path, corpus_tokenizer)
    staged, inline = tmp_path / "staged", tmp_path / "inline"
    assert main(["data", "prepare", "--config", str(config), "--out", str(staged), "--executor", "local",
                 "--tasks", "4", "--workers", "1"]) == 0  # fmt: skip
    kept_ids = {json.loads(line)["id"] for line in _clean_text(staged, "web", False).decode().splitlines()}
    assert [doc_id for doc_id in planted if doc_id in kept_ids] == planted[:1]
    rejects = [json.loads(line) for line in (staged / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rejects if r["reason"] == "dedup:near") == sorted(planted[1:])
    assert json.loads((staged / "data.json").read_text())["ledger"]["drops"]["dedup:near"] == 3
    passes = json.loads((staged / "logs" / "buckets" / "stats.json").read_text())[0]["stats"]["passes"]
    assert ((passes if isinstance(passes, int) else passes["total"]) > 4) == bool(bucket_rows)
    assert main(["data", "prepare", "--config", str(config), "--out", str(inline)]) == 0
    assert_same_result(inline, staged)


def _completions(out: Path) -> dict[str, list[str]]:
    logs = out / "logs"
    return {d.name: sorted(p.name for p in (d / "completions").iterdir()) for d in logs.iterdir()
            if (d / "completions").is_dir()}  # fmt: skip


@pytest.mark.slow
@needs_corpora
def test_kill_9_then_rerun_skips_completed_tasks_and_equals_uninterrupted(in_process, tmp_path):
    out = tmp_path / "killed"
    args = ["data", "prepare", "--config", str(EXAMPLE), "--out", str(out), "--executor", "local", "--tasks", "4",
            "--workers", "2"]  # fmt: skip
    process = _polylm(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marks = out / "logs" / "clean" / "completions"
    deadline = time.monotonic() + 300
    while not (marks.is_dir() and any(marks.iterdir())) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before the kill"
    done = _completions(out)
    finished = sum(map(len, done.values()))
    assert 1 <= finished < 4 + 4 + 1 + 4 + 1 + 4 + 1, done  # some tasks done, some not
    assert not (out / "data.json").exists()
    logs = {name: (out / "logs" / "clean" / "logs" / f"task_{name}.log").stat().st_mtime_ns for name in done["clean"]}

    time.sleep(0.05)  # a rewritten log would get a later mtime
    _run(*args)
    # Skipped, not redone: datatrove opens a task's log only when it runs the task.
    for name, mtime in logs.items():
        assert (out / "logs" / "clean" / "logs" / f"task_{name}.log").stat().st_mtime_ns == mtime, name
    assert len(_completions(out)["clean"]) == 4
    assert_same_result(in_process, out)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_executor_settings(config: Path, tmp_path: Path, settings: str) -> Path:
    """The example config (paths made absolute) with an `executor:` section appended."""
    text = config.read_text(encoding="utf-8").replace("../../../shared/", f"{REPO.parent / 'shared'}/")
    path = tmp_path / "config.yaml"
    path.write_text(text + f"\nexecutor:\n{settings}", encoding="utf-8")
    return path


@pytest.mark.slow
@needs_corpora
def test_real_ray_cluster_equals_local(in_process, tmp_path):
    port = _free_port()
    ray = str(BIN / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    scratch = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    start = [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", f"--temp-dir={scratch}"]  # fmt: skip
    started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        config = _with_executor_settings(EXAMPLE, tmp_path, f"  ray: {{address: '127.0.0.1:{port}'}}\n")
        out = tmp_path / "ray-out"
        _run("data", "prepare", "--config", str(config), "--out", str(out), "--executor", "ray", "--tasks", "4",
             "--workers", "2", env={"RAY_USAGE_STATS_ENABLED": "0"})  # fmt: skip
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
    assert_same_result(in_process, out)
    assert json.loads((out / "data.json").read_text())["run"]["executor"] == "ray"


STAND_IN_SBATCH = r'''#!PYTHON
"""Stand-in sbatch: records each script, then runs it at once, array task by array task, with Slurm's variables.
Running at submission is dependency order: a job may only depend on jobs submitted (so run) before it."""
import os, re, subprocess, sys
from pathlib import Path
record = Path(os.environ["SBATCH_RECORD"])
record.mkdir(exist_ok=True)
done = {p.stem for p in record.glob("*.ok")}
args, script = sys.argv[1:-1], Path(sys.argv[-1]).read_text()
for arg in args:
    if arg.startswith("--dependency="):
        for dep in arg.split("=", 1)[1].split(","):
            assert dep.split(":")[1] in done, f"job depends on {dep}, which has not run"
job = str(len(list(record.glob("*.sh"))) + 1)
(record / f"{job}.sh").write_text(script)
(record / f"{job}.args").write_text(" ".join(args))
array = re.search(r"^#SBATCH --array=0-(\d+)", script, re.M)
env = {**os.environ, "SLURM_JOB_ID": job, "SLURM_NODELIST": "localhost"}
for arg in args:
    if arg.startswith("--export=ALL,"):
        env.update(kv.split("=", 1) for kv in arg.split(",")[1:])
for task in range(int(array.group(1)) + 1 if array else 1):
    result = subprocess.run(["bash", str(record / f"{job}.sh")], env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
                            capture_output=True, text=True)
    (record / f"{job}_{task}.out").write_text(result.stdout + result.stderr)
    if result.returncode:
        sys.exit(f"job {job} task {task} failed: see {record / f'{job}_{task}.out'}")
(record / f"{job}.ok").write_text("")
print(f"Submitted batch job {job}")
'''
STAND_IN_SRUN = """#!/usr/bin/env bash
# srun [options] COMMAND...: run COMMAND here (one task).
while [[ $# -gt 0 && $1 == -* ]]; do case $1 in -n|-N) shift 2 ;; *) shift ;; esac; done
exec "$@"
"""
STAND_IN_SCONTROL = """#!/usr/bin/env bash
[[ $1 == show && $2 == hostnames ]] && echo localhost
"""


@pytest.mark.slow
@needs_corpora
def test_slurm_submission_run_by_a_stand_in_sbatch_equals_local(in_process, tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, text in (("sbatch", STAND_IN_SBATCH.replace("PYTHON", sys.executable)), ("srun", STAND_IN_SRUN),
                       ("scontrol", STAND_IN_SCONTROL)):  # fmt: skip
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    config = _with_executor_settings(EXAMPLE, tmp_path, "  slurm: {partition: cpu, time: '01:00:00'}\n")
    out, record = tmp_path / "slurm-out", tmp_path / "record"
    env = {"PATH": f"{tools}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}", "SBATCH_RECORD": str(record)}
    _run("data", "prepare", "--config", str(config), "--out", str(out), "--executor", "slurm", "--tasks", "4",
         "--workers", "2", env=env)  # fmt: skip
    scripts = [(record / f"{n}.sh").read_text() for n in range(1, len(list(record.glob("*.sh"))) + 1)]
    arrays = [s for s in scripts if "launch_pickled_pipeline" in s]
    assert len(arrays) == 7 and all("#SBATCH --partition=cpu" in s for s in arrays)
    assert "#SBATCH --array=0-3%2" in arrays[0] and "#SBATCH --array=0-0" in arrays[2]
    assert all(f"source {BIN / 'activate'}" in s for s in arrays)
    assert_same_result(in_process, out)


@pytest.mark.parametrize(
    ("extra", "settings", "message"),
    [
        (["--executor", "spark"], "", "--executor 'spark' is not one of local, slurm, ray"),
        (["--executor", "local", "--tasks", "0"], "", "tasks must be >= 1, got 0"),
        (["--executor", "slurm"], "  slurm: {partition: cpu}\n", "`sbatch` is not on PATH"),
        (["--executor", "ray"], "  ray: {address: '127.0.0.1:PORT'}\n", "does not answer"),
    ],
)
def test_bad_executor_input_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, extra, settings, message):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no sbatch here
    config = tmp_path / "config.yaml"
    corpus = REPO / "src" / "polylm" / "resources" / "corpus" / "en.txt"
    config.write_text(
        f'sources: [{{name: a, lang: en, paths: ["{corpus}"]}}]\n'
        + (f"executor:\n{settings.replace('PORT', str(_free_port()))}" if settings else ""),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    started = time.monotonic()
    assert main(["data", "prepare", "--config", str(config), "--out", str(out), *extra]) == 1
    assert time.monotonic() - started < 30
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error
    assert not out.exists()


@needs_corpora
def test_tasks_without_executor_and_a_rerun_of_another_plan_are_refused(tmp_path, corpus_tokenizer, capsys):
    config, _ = _near_duplicate_config(tmp_path, corpus_tokenizer)
    out = tmp_path / "out"
    assert main(["data", "prepare", "--config", str(config), "--out", str(out), "--tasks", "2"]) == 1
    assert "--tasks needs --executor" in capsys.readouterr().err and not out.exists()
    staged = ["data", "prepare", "--config", str(config), "--out", str(out), "--executor", "local", "--workers", "1"]
    assert main([*staged, "--tasks", "2"]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert main([*staged, "--tasks", "3"]) == 1
    error = capsys.readouterr().err.strip()
    assert "holds a staged run of another config or task count" in error and len(error.splitlines()) == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
