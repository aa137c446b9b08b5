"""The curriculum sampler: shares per stage, the exact switch, pure function of the index, exact resume."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from polylm.data.bilingual import BilingualConfig, bilingual_documents
from polylm.data.curriculum import (
    CurriculumConfig,
    CurriculumSampler,
    SourceInfo,
    Stage,
    blend,
    polylm_curriculum,
)
from polylm.data.readers import Pair
from polylm.errors import PolyLMError

# Small fake sources run out and are reused on purpose; the one test about that checks the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore:curriculum. source")


class FakeShards:
    """In-memory stand-in with ShardSet's reading API: documents of random tokens, each ending in </s> (2)."""

    def __init__(self, name: str, lang: str, documents: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.docs = [
            np.append(rng.integers(3, 1000, rng.integers(5, 60)), 2).astype(np.uint32) for _ in range(documents)
        ]
        self.lang, self.fingerprint = lang, f"{name}-{documents}-{seed}"
        self.num_documents = documents
        self.num_tokens = int(sum(len(d) for d in self.docs))

    def doc_lengths(self) -> np.ndarray:
        return np.array([len(d) for d in self.docs], dtype=np.int64)

    def doc_languages(self) -> list[str]:
        return [self.lang] * self.num_documents

    def document(self, index: int) -> np.ndarray:
        return self.docs[index]


def _sources(english_docs: int = 400) -> list[SourceInfo]:
    return [
        SourceInfo("en-web", "en", False, FakeShards("en", "en", english_docs, 0)),
        SourceInfo("zh-web", "zh", False, FakeShards("zh", "zh", 300, 1)),
        SourceInfo("th-web", "th", False, FakeShards("th", "th", 100, 2)),
        SourceInfo("pairs", "bilingual", True, FakeShards("pairs", "th", 50, 3)),
    ]


def _sampler(**changes) -> CurriculumSampler:
    config = polylm_curriculum(total_tokens=200_000, switch_fraction=0.5, seq_len=64, seed=7)
    for key, value in changes.items():
        setattr(config, key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CurriculumSampler(_sources(), config)


def test_blend_keeps_every_prefix_within_one_sample():
    weights = np.array([0.55, 0.3, 0.1, 0.05])
    assignment = blend(weights, 5000)
    counts = np.zeros(4)
    for i, source in enumerate(assignment):
        counts[source] += 1
        assert np.abs(counts - weights * (i + 1)).max() < 1.0
    assert np.array_equal(blend(weights, 5000), assignment)


def test_stage_shares_and_exact_switch():
    sampler = _sampler()
    start = int(sampler.stage_starts[1])
    assert start == 100_000 // 64  # the configured switch, in samples
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = [sampler.sample(i) for i in range(sampler.num_samples)]
    assert [s.stage for s in samples].index(1) == start
    for stage, target in ((0, 0.30), (1, 0.60)):
        tokens = [lang for s in samples if s.stage == stage for lang in s.languages]
        share = sum(lang != "en" for lang in tokens) / len(tokens)
        assert abs(share - target) < 0.005, (stage, share)
    assert [round(s["non_english_share"], 2) for s in sampler.stage_summary()] == [0.30, 0.60]


def test_bilingual_is_upweighted_in_stage_two():
    sampler = _sampler()
    summary = sampler.stage_summary()
    share = [stage["samples_per_source"]["pairs"] / stage["samples"] for stage in summary]
    assert share[1] > 1.5 * share[0] * 2  # twice the non-English share and a 2x boost


def test_samples_are_packed_documents_of_fixed_length():
    sampler = _sampler()
    sample = sampler.sample(3)
    assert len(sample.tokens) == 64 + 1 and len(sample.languages) == 65
    source = next(s for s in sampler.sources if s.name == sample.source)
    stream = np.concatenate(
        [source.shards.document(int(i)) for i in sampler._epoch(sampler.sources.index(source), 0)[0]]
    )
    k = int(sampler.local_index[3])
    assert np.array_equal(sample.tokens, stream[k * 64 : k * 64 + 65])
    # consecutive samples of a source overlap by exactly the one target token
    nxt = next(i for i in range(4, sampler.num_samples) if sampler.assignment[i] == sampler.assignment[3])
    assert sampler.sample(nxt).tokens[0] == sample.tokens[-1]


def test_pure_function_of_seed_and_index():
    a, b = _sampler(), _sampler()
    for index in (0, 17, 1500, 3000):
        assert np.array_equal(a.sample(index).tokens, b.sample(index).tokens)
    other = _sampler(seed=8)
    assert not all(np.array_equal(a.sample(i).tokens, other.sample(i).tokens) for i in range(5))


def test_resume_at_a_random_step_gives_the_same_next_100_batches():
    rng = np.random.default_rng(0)
    first = _sampler()
    batches = first.batches(batch_size=8)
    for _ in range(int(rng.integers(1, 50))):
        next(batches)
    state = first.state_dict()
    expected = [next(batches) for _ in range(100)]
    rebuilt = _sampler()
    rebuilt.load_state_dict(state)
    resumed = rebuilt.batches(batch_size=8)
    for want in expected:
        got = next(resumed)
        assert [s.index for s in got] == [s.index for s in want]
        assert all(np.array_equal(g.tokens, w.tokens) for g, w in zip(got, want, strict=True))


def test_changed_mixture_refuses_to_resume_unless_forced():
    state = _sampler().state_dict()
    changed = _sampler(seq_len=32)
    with pytest.raises(PolyLMError, match="resume with force"):
        changed.load_state_dict(state)
    with pytest.warns(UserWarning, match="forced"):
        changed.load_state_dict(state, force=True)
    assert changed.next_sample == state["next_sample"]


def test_exhausted_source_is_reused_with_one_warning_and_a_count():
    config = CurriculumConfig([Stage("only", 50_000, weights={"th-web": 1.0})], seq_len=64, seed=1)
    sampler = CurriculumSampler(_sources(), config)
    th_tokens = sampler.sources[2].shards.num_tokens
    with pytest.warns(UserWarning, match="'th-web' .* is used up; reusing it") as caught:
        for index in range(sampler.num_samples):
            sampler.sample(index)
    assert sampler.exhausted["th-web"] == (sampler.num_samples * 64) // th_tokens >= 2
    assert sum("'th-web'" in str(warning.message) for warning in caught) == 1  # once, not once per epoch
    assert sampler.epochs()["th-web"] == pytest.approx((sampler.num_samples * 64 + 1) / th_tokens, abs=1e-3)
    assert sampler.epochs()["en-web"] == 0


def test_bad_stages_are_refused():
    with pytest.raises(PolyLMError, match="unknown sources"):
        CurriculumSampler(_sources(), CurriculumConfig([Stage("s", 1000, weights={"nope": 1.0})]))
    with pytest.raises(PolyLMError, match="non_english_share must be in"):
        CurriculumSampler(_sources(), CurriculumConfig([Stage("s", 1000, non_english_share=1.5)]))
    with pytest.raises(PolyLMError, match="switch_fraction"):
        polylm_curriculum(1000, switch_fraction=1.0)


def test_bilingual_documents_both_directions():
    pairs = [Pair(f"s{i}", f"t{i}", "de", "en", "tatoeba", f"f:{i}") for i in range(5)]
    docs = list(bilingual_documents(pairs, BilingualConfig(pairs_per_document=2)))
    assert len(docs) == 6  # 3 groups x 2 directions
    prompt = "Translate this sentence from German to English."
    assert docs[0].text == f"s0\n{prompt}\nt0\n\ns1\n{prompt}\nt1"
    assert docs[1].text.startswith("t0\nTranslate this sentence from English to German.\ns0")
    assert {d.lang for d in docs} == {"de"} and docs[-1].text.count("Translate") == 1
    with pytest.raises(PolyLMError, match="needs both"):
        BilingualConfig(templates=["{src} only"])
