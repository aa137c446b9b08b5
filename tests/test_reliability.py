"""Durable writes and one writer per run directory: torn files at every byte offset of their last record, a
kill between two renames, and two processes on one --out."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import EMBEDDED_CORPUS
from polylm.cli import main
from polylm.data.prepare import load_summary
from polylm.data.shards import ShardSet
from polylm.durable import append_jsonl, cut_torn_tail, read_jsonl, remove_dir, replace_dir, rewrite_jsonl
from polylm.errors import PolyLMError
from polylm.runlock import LOCK_FILE, hold_run_dir
from polylm.selfinstruct.state import Store
from polylm.selfinstruct.task import Task
from polylm.train.checkpointing import list_checkpoints, read_trainer_state
from polylm.train.metrics import MetricsLog
from train_support import config_file, losses, prepare_train_data

pytestmark = pytest.mark.filterwarnings("ignore:curriculum. source")  # the tiny corpus is reused, by design


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepare_train_data(tmp_path_factory.mktemp("reliability-data"))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, data_dir):
    """A run stopped after step 8 (checkpoints 4 and 8) and the uninterrupted 12-step run's losses."""
    root = tmp_path_factory.mktemp("reliability-runs")
    config = str(config_file(root, data_dir))
    assert main(["pretrain", "--config", config, "--out", str(root / "whole")]) == 0
    assert main(["pretrain", "--config", config, "--out", str(root / "part"), "--max-steps", "8"]) == 0
    return root / "part", config, losses(root / "whole")


def _one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


# --- the module itself -------------------------------------------------------------------------------------


def test_a_torn_last_line_is_reported_and_cut_and_a_damaged_middle_line_names_its_line(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, [{"step": 1}, {"step": 2}])
    with log.open("a") as handle:
        handle.write('{"step": 3, "lo')
    contents = read_jsonl(log)
    assert contents.records == [{"step": 1}, {"step": 2}] and contents.torn_bytes == len('{"step": 3, "lo')
    assert cut_torn_tail(log) == len('{"step": 3, "lo') and log.read_text().endswith("}\n")
    append_jsonl(log, [{"step": 3}])
    assert [r["step"] for r in read_jsonl(log).records] == [1, 2, 3]
    log.write_bytes(b'{"step": 1}\n{"st\xff\n{"step": 3}\n')
    with pytest.raises(PolyLMError, match=r"log.jsonl:2: not a JSON record"):
        read_jsonl(log)
    log.write_text('{"step": 1}\n[1]\n')
    with pytest.raises(PolyLMError, match=r"log.jsonl:2: expected a JSON object"):
        read_jsonl(log)


def test_rewrite_is_atomic_a_failing_rewrite_leaves_the_file_whole(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, [{"step": n} for n in range(1, 6)])
    before = log.read_bytes()

    def killed(*_args):
        raise KeyboardInterrupt  # stands for a kill between writing the new file and renaming it

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        rewrite_jsonl(log, lambda record: record["step"] <= 3)
    assert log.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]
    monkeypatch.undo()
    assert [r["step"] for r in rewrite_jsonl(log, lambda record: record["step"] <= 3)] == [1, 2, 3]


def test_a_kill_between_the_two_renames_of_replace_dir_is_repaired_by_the_next_call(tmp_path):
    target, aside = tmp_path / "step-8", tmp_path / ".step-8.old"
    aside.mkdir()
    (aside / "trainer.pt").write_text("old, complete")  # target moved aside, the kill came before the new one
    new = tmp_path / ".step-8.tmp"
    new.mkdir()
    (new / "trainer.pt").write_text("new")
    replace_dir(new, target)
    assert (target / "trainer.pt").read_text() == "new" and not aside.exists() and not new.exists()
    remove_dir(target)
    assert list(tmp_path.iterdir()) == []


# --- torn writes of each durable file ----------------------------------------------------------------------


def test_metrics_torn_at_every_offset_of_the_last_record_keep_every_earlier_record(tmp_path, stopped_run):
    part, _, _ = stopped_run
    original = (part / "metrics.jsonl").read_bytes()
    lines = original.splitlines(keepends=True)
    start = len(original) - len(lines[-1])
    run = tmp_path / "run"
    run.mkdir()
    for cut in range(start, len(original)):
        (run / "metrics.jsonl").write_bytes(original[:cut])
        (run / "validation.jsonl").write_bytes((part / "validation.jsonl").read_bytes())
        MetricsLog(run, resumed_step=7, tensorboard=False)  # a checkpoint at 7: the torn record 8 is redone
        assert (run / "metrics.jsonl").read_bytes() == b"".join(lines[:7]), cut
        (run / "metrics.jsonl").write_bytes(original[:cut])
        # A checkpoint at 8 implies record 8 was fsynced before it: a torn record 8 is damage, said in one line.
        with pytest.raises(PolyLMError, match=r"metrics.jsonl: ends at step 7, but the checkpoint .* step 8"):
            MetricsLog(run, resumed_step=8, tensorboard=False)
        assert (run / "metrics.jsonl").read_bytes() == b"".join(lines[:7]), cut  # earlier records all kept


@pytest.mark.slow
def test_resume_after_a_torn_metrics_line_or_checkpoint_continues_exactly(tmp_path, stopped_run):
    """Sampled offsets through the CLI: the last checkpoint lost (a kill inside its save) and record 8 torn."""
    part, config, whole = stopped_run
    original = (part / "metrics.jsonl").read_bytes()
    start = original.rstrip(b"\n").rfind(b"\n") + 1
    for cut in sorted(random.Random(8).sample(range(start, len(original)), 2)):
        run = tmp_path / f"cut-{cut}"
        shutil.copytree(part, run)
        (run / "metrics.jsonl").write_bytes(original[:cut])
        last = run / "checkpoints" / "step-00000008"
        last.rename(last.parent / ".step-00000008.tmp")  # as a kill inside the save of step 8 leaves it
        assert main(["pretrain", "--config", config, "--out", str(run), "--resume", "auto"]) == 0
        assert losses(run) == whole, cut


def test_a_torn_trainer_state_stops_with_one_line_naming_the_file(tmp_path, stopped_run, capsys):
    part, config, _ = stopped_run
    checkpoint = list_checkpoints(part)[-1]
    original = (checkpoint / "trainer.pt").read_bytes()
    run = tmp_path / "run"
    shutil.copytree(part, run)
    damaged = list_checkpoints(run)[-1] / "trainer.pt"
    offsets = range(0, len(original), max(1, len(original) // 400))
    for cut in offsets:
        damaged.write_bytes(original[:cut])
        with pytest.raises(PolyLMError, match=r"trainer.pt: damaged"):
            read_trainer_state(damaged.parent)
    damaged.write_bytes(original[: len(original) // 2])
    assert main(["pretrain", "--config", config, "--out", str(run), "--resume", "auto"]) == 1
    _one_line_error(capsys, str(damaged), "remove this checkpoint")
    assert losses(run) == losses(part)  # nothing was rewritten


def test_a_torn_shard_stops_with_one_line_naming_the_file(tmp_path, data_dir):
    source = data_dir / "shards" / "en"
    for suffix in (".bin", ".idx", ".lang"):
        shard = tmp_path / f"en{suffix}"
        shutil.copytree(source, shard)
        path = next(shard.glob(f"shard-*{suffix}"))
        original = path.read_bytes()
        last_record = {".bin": 4 * 40, ".idx": 8, ".lang": 1}[suffix]  # the last document's bytes (or a sample)
        for cut in range(len(original) - last_record, len(original)):
            path.write_bytes(original[:cut])
            with pytest.raises(PolyLMError, match=rf"{path.name}: \d+ bytes where metadata.json implies"):
                ShardSet(shard)


def test_a_torn_report_stops_with_one_line_naming_the_file(tmp_path, data_dir, capsys):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    report = copy / "data.json"
    original = report.read_bytes()
    offsets = range(0, len(original), max(1, len(original) // 300))
    for cut in offsets:
        report.write_bytes(original[:cut])
        with pytest.raises(PolyLMError, match=r"data.json: not valid JSON"):
            load_summary(copy)
    report.write_bytes(original[: len(original) // 3])
    assert main(["data", "stats", str(copy)]) == 1
    _one_line_error(capsys, str(report))


def test_self_instruct_records_and_state_torn_at_every_offset(tmp_path):
    store = Store(tmp_path / "out")
    tasks = [Task(f"instruction {n}", "", f"output {n}") for n in range(3)]
    store.append_records("es", tasks)
    store.save_state({"es": {"kept": 3}})
    store.close()
    records = store.records_path("es")
    original, state = records.read_bytes(), (tmp_path / "out" / "state.json").read_bytes()
    start = original.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(start, len(original)):
        records.write_bytes(original[:cut])
        store = Store(tmp_path / "out")
        assert store.load_records("es") == tasks[:2], cut  # the record the kill cut is gone, the others whole
        store.close()
    for cut in range(len(state)):  # state.json is replaced whole; a damaged one is named, never half-read
        (tmp_path / "out" / "state.json").write_bytes(state[:cut])
        store = Store(tmp_path / "out")
        if state[:cut].strip() == state.strip():  # only the final newline cut: the whole object
            assert store.load_state() == {"es": {"kept": 3}}
        else:
            with pytest.raises(PolyLMError, match=r"state.json: not JSON.*delete it to restart the counters"):
                store.load_state()
        store.close()


# --- one writer per run directory ---------------------------------------------------------------------------

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from polylm.runlock import hold_run_dir
    with hold_run_dir(Path(sys.argv[1]), "test"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_a_second_holder_is_refused_with_the_pid_and_a_killed_holders_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(PolyLMError, match=rf"in use by pid {holder.pid} on "), hold_run_dir(tmp_path, "test"):
        pass
    holder.kill()
    holder.wait()
    assert holder.returncode == -signal.SIGKILL
    with hold_run_dir(tmp_path, "test"):
        assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())


def _wait_for(predicate, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_two_pretrains_on_one_out(tmp_path, data_dir, stopped_run):
    _, _, whole = stopped_run
    config = str(config_file(tmp_path, data_dir))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "polylm.cli", "pretrain", "--config", config, "--out", str(run)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run / LOCK_FILE).exists() and (run / LOCK_FILE).read_text().startswith(f"{first.pid} "))
    first.send_signal(signal.SIGSTOP)  # paused while it holds the lock: the second surely meets a live holder
    try:
        started = time.time()
        second = subprocess.run([*command, "--resume", "auto"], capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 1 and time.time() - started < 30, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and f"in use by pid {first.pid}" in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert losses(run) == whole  # the first finished unharmed

    # kill -9 of the holder mid-run: `--resume auto` takes the lock over and ends where an unbroken run ends.
    killed = tmp_path / "killed"
    holder = subprocess.Popen([*command[:-1], str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: bool(list_checkpoints(killed)) or holder.poll() is not None)
    holder.send_signal(signal.SIGSTOP)
    assert holder.poll() is None and (killed / "metrics.jsonl").read_text().count("\n") < 12  # mid-run
    holder.kill()
    holder.wait()
    assert holder.returncode == -signal.SIGKILL
    assert main(["pretrain", "--config", config, "--out", str(killed), "--resume", "auto"]) == 0
    assert losses(killed) == whole
    assert (killed / LOCK_FILE).read_text().split()[0] == str(os.getpid())


def test_data_prepare_and_self_instruct_are_refused_on_a_held_directory(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(PolyLMError, match=rf"in use by pid {holder.pid}"):
            Store(tmp_path)
        config = tmp_path / "data.yaml"
        corpus = str(EMBEDDED_CORPUS / "en.txt")
        config.write_text(json.dumps({"sources": [{"name": "en", "lang": "en", "paths": [corpus]}]}))
        assert main(["data", "prepare", "--config", str(config), "--out", str(tmp_path)]) == 1
        _one_line_error(capsys, f"in use by pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
