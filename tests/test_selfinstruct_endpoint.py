"""`polylm self-instruct` against a fake OpenAI-compatible server: faults, resume after kill -9, seeds,
translation cache, concurrency bound, errors at start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from polylm.cli import main
from polylm.instruct.formats import alpaca
from selfinstruct_support import FAULTS, FakeOpenAI, write_english, write_seeds

LANGUAGES = ("es", "ja", "th")
FAST_RETRIES = ["--timeout", "0.5", "--backoff", "0.01", "--retries", "40"]


def _args(url: str, out: Path, seeds: Path | None, per_language: int, *extra: str) -> list[str]:
    args = ["self-instruct", "--endpoint", url, "--model", "fake-model", "--languages", ",".join(LANGUAGES)]
    args += ["--per-language", str(per_language), "--out", str(out), "--no-progress", *FAST_RETRIES, *extra]
    return args + (["--seeds", str(seeds)] if seeds else [])


def _records(out: Path, lang: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()]


def _check_output(out: Path, per_language: int) -> dict:
    """Every target met exactly, no duplicate, every line a MultiAlpaca record the instruct loader reads."""
    stats = json.loads((out / "stats.json").read_text())
    for lang in LANGUAGES:
        records = _records(out, lang)
        assert len(records) == per_language
        assert len({r["instruction"] for r in records}) == per_language
        for record in records:
            assert set(record) == {"instruction", "input", "output"}
            alpaca(record)
        s = stats["languages"][lang]
        assert s["kept"] == per_language and s["target"] == per_language
    return stats


def test_faults_are_retried_until_every_target_is_met(tmp_path: Path, capsys) -> None:
    seeds = write_seeds(tmp_path / "seeds")
    script = [fault for fault in FAULTS for _ in range(2)]
    with FakeOpenAI(script=script, fault_rate=0.3, bad_tasks=True, hang=1.5) as fake:
        assert main(_args(fake.url, tmp_path / "out", seeds, 12, "--concurrency", "3")) == 0
    assert not fake.script and fake.translations == 0
    stats = _check_output(tmp_path / "out", 12)
    total = stats["total"]
    assert {"429", "5xx", "timeout", "connection", "bad_response", "unparsable"} <= set(total["retries"])
    assert {"language", "empty_output", "blacklist", "truncated"} <= set(total["dropped"])
    for s in stats["languages"].values():
        assert s["candidates"] == s["kept"] + sum(s["dropped"].values())
    assert "es: kept 12/12" in capsys.readouterr().out


def test_requests_in_flight_stay_within_concurrency(tmp_path: Path) -> None:
    with FakeOpenAI(delay=0.2, tasks_per_answer=1) as fake:
        assert main(_args(fake.url, tmp_path / "out", write_seeds(tmp_path / "seeds"), 4, "--concurrency", "2")) == 0
    assert fake.max_inflight == 2


def test_kill_and_resume_lose_and_repeat_nothing(tmp_path: Path) -> None:
    out, per_language = tmp_path / "out", 60
    seeds = write_seeds(tmp_path / "seeds")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with FakeOpenAI(fault_rate=0.2, faults=("429", "500", "garbage"), delay=0.1, tasks_per_answer=2) as fake:
        args = _args(fake.url, out, seeds, per_language, "--concurrency", "3")
        child = subprocess.Popen([sys.executable, "-m", "polylm.cli", *args], env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            lines = [len(_records(out, lang)) if (out / f"{lang}.jsonl").exists() else 0 for lang in LANGUAGES]
            if min(lines) >= 5:
                break
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read().decode()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stderr.close()
        before = {lang: (out / f"{lang}.jsonl").read_text(encoding="utf-8") for lang in LANGUAGES}
        assert all(0 < text.count("\n") < per_language for text in before.values())
        assert main(args) == 0
    _check_output(out, per_language)
    for lang in LANGUAGES:
        kept = before[lang][: before[lang].rfind("\n") + 1]
        assert (out / f"{lang}.jsonl").read_text(encoding="utf-8").startswith(kept)


def test_seed_files_mean_no_translation_and_translations_are_cached(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds", ("es", "ja"))
    english = write_english(tmp_path / "seed_tasks.jsonl", count=4)
    out = tmp_path / "out"
    with FakeOpenAI() as fake:
        assert main(_args(fake.url, out, seeds, 3, "--seed-tasks", str(english))) == 0
        assert fake.translations == 4
        assert all("into Thai" in p for p in fake.prompts if "Translate this task" in p)
        cached = [json.loads(line) for line in (out / "seeds" / "th.jsonl").read_text().splitlines()]
        assert sorted(row["id"] for row in cached) == [f"seed_task_{i}" for i in range(4)]
        assert main(_args(fake.url, out, seeds, 6, "--seed-tasks", str(english))) == 0
        assert fake.translations == 4
    stats = _check_output(out, 6)
    assert stats["languages"]["th"]["seeds"]["source"] == "translated"
    assert stats["languages"]["es"]["seeds"] == {"source": "file", "count": 6}


def test_a_language_without_seeds_needs_seed_tasks(tmp_path: Path, capsys) -> None:
    with FakeOpenAI() as fake:
        assert main(_args(fake.url, tmp_path / "out", write_seeds(tmp_path / "seeds", ("es",)), 3)) == 1
    assert "no seeds for ja" in capsys.readouterr().err
    assert not fake.prompts


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_input_fails_at_start_with_a_clear_error(tmp_path: Path, capsys, monkeypatch) -> None:
    seeds = write_seeds(tmp_path / "seeds")
    assert main(_args(f"http://127.0.0.1:{_closed_port()}", tmp_path / "a", seeds, 3)) == 1
    assert "cannot reach http://127.0.0.1:" in capsys.readouterr().err
    monkeypatch.setenv("FAKE_KEY", "wrong")
    with FakeOpenAI(api_key="right") as fake:
        assert main(_args(fake.url, tmp_path / "b", seeds, 3, "--api-key-env", "FAKE_KEY")) == 1
        assert "refused the API key (HTTP 401" in capsys.readouterr().err
        assert main(_args(fake.url, tmp_path / "c", seeds, 3, "--api-key-env", "UNSET_KEY_VAR")) == 1
        assert "UNSET_KEY_VAR: that environment variable is not set" in capsys.readouterr().err
        args = _args(fake.url, tmp_path / "d", seeds, 3)
        args[args.index("--languages") + 1] = "es,xx"
        assert main(args) == 1
        assert "unknown language 'xx'" in capsys.readouterr().err
        monkeypatch.setenv("FAKE_KEY", "right")
        assert main(_args(fake.url, tmp_path / "e", seeds, 2, "--api-key-env", "FAKE_KEY")) == 0
    assert len(fake.prompts) > 0 and not (tmp_path / "d").exists()


def test_an_endpoint_failing_every_try_stops_the_run_with_stats(tmp_path: Path, capsys) -> None:
    with FakeOpenAI(fault_rate=1.0, faults=("503",)) as fake:
        args = _args(fake.url, tmp_path / "out", write_seeds(tmp_path / "seeds"), 3)
        args[args.index("--retries") + 1] = "3"
        assert main(args) == 1
    assert "no usable answer after 3 tries (last: 5xx)" in capsys.readouterr().err
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["total"]["retries"]["5xx"] >= 3


def test_a_model_that_never_follows_the_format_stops_after_max_rounds(tmp_path: Path, capsys) -> None:
    with FakeOpenAI(fault_rate=1.0, faults=("unparsable",)) as fake:
        args = _args(fake.url, tmp_path / "out", write_seeds(tmp_path / "seeds"), 3, "--max-rounds", "2")
        args[args.index("--retries") + 1] = "2"
        assert main(args) == 1
    assert "targets not met after 2 rounds per language" in capsys.readouterr().err
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert all(s["unparsable"] == 2 and s["kept"] == 0 for s in stats["languages"].values())
