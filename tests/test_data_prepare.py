"""End to end on the real corpora: examples/data/curriculum.yaml through `polylm data prepare`, then the sampler."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA
from polylm.cli import main
from polylm.data.prepare import load_config, open_sampler, read_jsonl
from polylm.data.shards import write_shards
from polylm.errors import PolyLMError

EXAMPLE = REPO / "examples" / "data" / "curriculum.yaml"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:curriculum. source"),  # the small English sources are reused, by design
    pytest.mark.skipif(not (SHARED_DATA / "corpora").is_dir(), reason="../shared/data/corpora is absent"),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "prepared"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["data", "prepare", "--config", str(EXAMPLE), "--out", str(out)]) == 0
    return out


def test_stats_json_interface(prepared, capsys):
    capsys.readouterr()
    assert main(["data", "stats", str(prepared), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["tokens"]) >= {"en", "zh", "ja", "th", "he"}
    assert sum(report["drops"].values()) > 0 and all(":" in reason for reason in report["drops"])
    assert [stage["name"] for stage in report["stages"]] == ["stage1", "stage2"]
    assert {"non_english_share", "start_sample"} <= set(report["stages"][0])
    assert report["epochs"]["leipzig-en"] > 1  # 70% English from a small English corpus: reused, and said so
    rejects = [json.loads(line) for line in (prepared / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(report["drops"].values()) == len(rejects)
    assert {r["reason"] for r in rejects} == set(report["drops"])


def test_stats_funnel_adds_up_step_by_step(prepared, capsys):
    capsys.readouterr()
    assert main(["data", "stats", str(prepared), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    funnel = report["funnel"]
    assert [step["step"] for step in funnel] == ["normalize", "quality", "language", "exact_dedup", "near_dedup"]
    for step in funnel:
        assert step["in"] == step["kept"] + sum(step["dropped"].values()), step
    # every drop is some step's, and what enters the first step less every drop is what was kept
    by_reason: dict[str, int] = {}
    for step in funnel:
        for reason, count in step["dropped"].items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    assert by_reason == report["drops"]
    assert funnel[0]["in"] - sum(report["drops"].values()) == sum(report["kept"].values())
    assert main(["data", "stats", str(prepared)]) == 0
    assert "quality" in capsys.readouterr().out.split("documents through each step")[1].splitlines()[2]


def test_realized_shares_and_exact_switch(prepared):
    sampler = open_sampler(prepared)
    config = load_config(EXAMPLE).curriculum
    switch = int(config.total_tokens * config.switch_fraction) // config.seq_len
    assert int(sampler.stage_starts[1]) == switch
    languages: dict[int, list[str]] = {0: [], 1: []}
    stages = []
    for index in range(sampler.num_samples):
        sample = sampler.sample(index)
        stages.append(sample.stage)
        languages[sample.stage].extend(sample.languages)
    assert stages.index(1) == switch
    for stage, target in ((0, 0.30), (1, 0.60)):
        tags = languages[stage]
        assert len(tags) >= 1_000_000
        share = sum(tag != "en" for tag in tags) / len(tags)
        assert abs(share - target) <= 0.005, (stage, share)


def test_resume_from_a_random_step_gives_the_next_100_batches(prepared):
    first = open_sampler(prepared)
    batches = first.batches(batch_size=4)
    for _ in range(int(np.random.default_rng().integers(1, 400))):
        next(batches)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint would store it
    expected = [next(batches) for _ in range(100)]
    rebuilt = open_sampler(prepared)
    rebuilt.load_state_dict(state)
    resumed = rebuilt.batches(batch_size=4)
    for want in expected:
        got = next(resumed)
        assert all(np.array_equal(g.tokens, w.tokens) for g, w in zip(got, want, strict=True))


def test_one_and_two_workers_write_identical_shards(prepared, tmp_path):
    docs = list(read_jsonl(prepared / "clean" / "leipzig-ja.jsonl")) + list(
        read_jsonl(prepared / "clean" / "tatoeba.jsonl")
    )
    for workers in (1, 2):
        write_shards(iter(docs), prepared / "tokenizer", tmp_path / f"w{workers}", workers=workers, progress=False)
    names = sorted(p.name for p in (tmp_path / "w1").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "w2").iterdir())
    for name in names:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name


def test_changed_shards_are_refused(prepared, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    shard = sorted((copy / "shards" / "leipzig-de").glob("*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-4])
    with pytest.raises(PolyLMError, match=str(shard.name)):
        open_sampler(copy)
