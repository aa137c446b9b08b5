"""Decoding equals transformers' `generate` token for token, and beam search finds the beams it should."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from conftest import TINY, random_model
from polylm.errors import PolyLMError
from polylm.generate import GenerationConfig, generate
from polylm.hf_checkpoint import save_model
from polylm.model import PolyLM

PROMPTS = [[5, 17, 99, 3, 250, 7], [40, 41], [300, 301, 302, 9]]


def lively_model(seed: int = 0) -> PolyLM:
    """Random weights scaled so that greedy decoding wanders instead of repeating one token."""
    model = PolyLM(TINY).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name in ("wte.weight", "wpe.weight"):
                param.copy_(noise * 0.1)
            elif name.startswith("ln") or ".ln_" in name:
                param.copy_(1 + noise * 0.1 if name.endswith("weight") else noise * 0.0)
            else:
                param.copy_(noise * 0.2)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Our random model and transformers' GPT2LMHeadModel loaded from its save: the same weights."""
    ours = lively_model()
    out = tmp_path_factory.mktemp("gen")
    save_model(ours, out)
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    return ours, hf


def _hf(hf, prompts, pad=2, **kwargs):
    """transformers' generate on left-padded prompts; each row's generated part, fill removed later."""
    length = max(map(len, prompts))
    ids = torch.tensor([[pad] * (length - len(p)) + p for p in prompts])
    mask = (ids != -1).long()
    for row, prompt in enumerate(prompts):
        mask[row, : length - len(prompt)] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hf.generate(ids, attention_mask=mask, pad_token_id=pad, **kwargs)
    return [row[length:].tolist() for row in out]


def _ours(model, prompts, **kwargs):
    return [g.token_ids for row in generate(model, prompts, GenerationConfig(**kwargs)) for g in row]


def _assert_same(ours_rows, hf_rows, pad=2):
    """transformers right-fills shorter rows with the pad id; ours stop at eos or the limit."""
    assert len(ours_rows) == len(hf_rows)
    for ours, theirs in zip(ours_rows, hf_rows, strict=True):
        assert ours == theirs[: len(ours)], (ours, theirs)
        assert all(token == pad for token in theirs[len(ours) :]), (ours, theirs)


def _eos_in_the_middle(model, prompt, **kwargs):
    """A token the decoding would produce a few steps in: making it eos ends some hypotheses mid-way."""
    tokens = _ours(model, [prompt], **{**kwargs, "eos_token_id": None, "num_return_sequences": 1})[0]
    assert len(set(tokens)) > 3, "the test model should not be degenerate"
    return tokens[4]


def test_greedy(models):
    ours, hf = models
    rows = _ours(ours, PROMPTS[:1], max_new_tokens=20, eos_token_id=None)
    _assert_same(rows, _hf(hf, PROMPTS[:1], max_new_tokens=20, do_sample=False, eos_token_id=None))


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.6, 1.7])
def test_beam_search(models, early_stopping, length_penalty):
    ours, hf = models
    kwargs = dict(
        max_new_tokens=12,
        num_beams=4,
        early_stopping=early_stopping,
        length_penalty=length_penalty,
        num_return_sequences=3,
    )
    eos = _eos_in_the_middle(ours, PROMPTS[0], **kwargs)
    kwargs["eos_token_id"] = eos
    rows = _ours(ours, PROMPTS[:1], **kwargs)
    assert rows != _ours(ours, PROMPTS[:1], **{**kwargs, "eos_token_id": None})  # the eos token mattered
    if length_penalty < 1:
        assert [len(row) for row in rows] == [5, 12, 12]  # the best hypothesis ended at the eos, mid-way
    _assert_same(rows, _hf(hf, PROMPTS[:1], do_sample=False, **kwargs))


@pytest.mark.parametrize(
    "options",
    [
        {"no_repeat_ngram_size": 2},
        {"no_repeat_ngram_size": 3, "num_beams": 4},
        {"repetition_penalty": 1.3},
        {"repetition_penalty": 0.8, "num_beams": 3},
        {"eos_token_id": [7, 8, 9]},
        {"max_length": 14, "max_new_tokens": None},
    ],
)
def test_processors_and_limits(models, options):
    ours, hf = models
    kwargs = {"max_new_tokens": 16, "eos_token_id": None, **options}
    _assert_same(_ours(ours, PROMPTS[:1], **kwargs), _hf(hf, PROMPTS[:1], do_sample=False, **kwargs))


@pytest.mark.parametrize("num_beams", [1, 4])
def test_batch_of_prompts_of_different_lengths(models, num_beams):
    ours, hf = models
    kwargs = dict(max_new_tokens=10, num_beams=num_beams, repetition_penalty=1.1)
    kwargs["eos_token_id"] = _eos_in_the_middle(ours, PROMPTS[1], **kwargs)
    rows = _ours(ours, PROMPTS, **kwargs)
    _assert_same(rows, _hf(hf, PROMPTS, do_sample=False, **kwargs))
    alone = [_ours(ours, [prompt], **kwargs)[0] for prompt in PROMPTS]
    assert rows == alone  # left padding changes nothing


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 1.0, "top_k": 0},
        {"temperature": 0.7, "top_k": 50, "top_p": 0.9},
        {"temperature": 1.3, "top_k": 5, "repetition_penalty": 1.2},
        {"top_p": 0.5, "num_return_sequences": 3},
    ],
)
def test_sampling_with_the_same_seed(models, options):
    ours, hf = models
    kwargs = {"max_new_tokens": 15, "eos_token_id": None, **options}
    torch.manual_seed(1234)
    theirs = _hf(hf, PROMPTS, do_sample=True, **kwargs)
    mine = _ours(ours, PROMPTS, do_sample=True, seed=1234, **kwargs)
    _assert_same(mine, theirs)
    assert mine != _ours(ours, PROMPTS, do_sample=True, seed=99, **kwargs)


# ---- hand-built beams: a model whose next-token distribution is a fixed table ----

EOS = 2


class TableModel(nn.Module):
    """Next-token probabilities depend only on the last token, from a hand-written table."""

    def __init__(self, table: dict[int, dict[int, float]], vocab: int = 16) -> None:
        super().__init__()
        self.config = TINY.replace(vocab_size=vocab)
        self.device = torch.device("cpu")
        logits = torch.full((vocab, vocab), -30.0)
        for token, row in table.items():
            for nxt, p in row.items():
                logits[token, nxt] = math.log(p)
        self.logits = logits

    def new_cache(self, batch_size: int, max_length: int):
        return _NoCache()

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, last_token_only=False):
        logits = self.logits[input_ids]
        return logits[:, -1:] if last_token_only else logits


class _NoCache:
    def reorder(self, index):
        pass


TABLE = {
    3: {4: 0.5, 5: 0.4, 6: 0.1},
    4: {7: 0.4, 8: 0.35, 9: 0.25},
    5: {EOS: 0.9, 10: 0.1},
    6: {EOS: 1.0},
    7: {EOS: 0.9, 11: 0.1},
    8: {EOS: 0.95, 12: 0.05},
    9: {EOS: 1.0},
    10: {EOS: 1.0},
    11: {EOS: 1.0},
    12: {EOS: 1.0},
}


def _beams(length_penalty: float, early_stopping=True, num_beams: int = 2):
    config = GenerationConfig(
        max_new_tokens=3,
        num_beams=num_beams,
        num_return_sequences=2,
        eos_token_id=EOS,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
    )
    return generate(TableModel(TABLE), [[3]], config)[0]


def test_hand_built_beams_short_hypothesis_finishes_first():
    # Step 2: "5 </s>" (p = 0.36) ends while the beams through 4 go on; "4 7 </s>" (p = 0.18) ends at step 3.
    # With length_penalty 1: 0.36 -> log(0.36)/2 = -0.51 beats log(0.18)/3 = -0.57.
    best, second = _beams(length_penalty=1.0)
    assert best.token_ids == [5, EOS] and second.token_ids == [4, 7, EOS]
    assert best.score == pytest.approx(math.log(0.4 * 0.9) / 2, abs=1e-5)
    assert second.score == pytest.approx(math.log(0.5 * 0.4 * 0.9) / 3, abs=1e-5)
    assert best.finish_reason == second.finish_reason == "stop"


def test_hand_built_beams_length_penalty_prefers_the_longer():
    # length_penalty 2: "5 </s>" scores log(0.36)/4 = -0.255, below "4 7 </s>" log(0.18)/9 = -0.190
    # and "4 8 </s>" log(0.16625)/9 = -0.199.
    best, second = _beams(length_penalty=2.0)
    assert best.token_ids == [4, 7, EOS] and second.token_ids == [4, 8, EOS]


def test_hand_built_greedy_takes_the_locally_best_path():
    config = GenerationConfig(max_new_tokens=3, eos_token_id=EOS)
    assert generate(TableModel(TABLE), [[3]], config)[0][0].token_ids == [4, 7, EOS]


def test_wide_beam_finds_the_exhaustive_optimum():
    """With as many beams as live paths, beam search with length_penalty 0 must return the most likely sequence."""
    best = _beams(length_penalty=0.0, early_stopping="never", num_beams=8)[0]

    def paths(token, depth):
        if token == EOS or depth == 3:
            yield [], 0.0
            return
        for nxt, p in TABLE[token].items():
            for rest, logp in paths(nxt, depth + 1):
                yield [nxt, *rest], math.log(p) + logp

    expected = max(paths(3, 0), key=lambda item: item[1])
    assert best.token_ids == expected[0] and best.score == pytest.approx(expected[1], abs=1e-5)


# ---- bad options ----


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_beams": 0}, "'num_beams' (--num-beams) must be at least 1, got 0"),
        ({"top_p": 0.0}, "'top_p' (--top-p) must be in (0, 1], got 0.0"),
        ({"top_p": 1.5}, "'top_p' (--top-p) must be in (0, 1], got 1.5"),
        ({"do_sample": True, "temperature": 0.0}, "'temperature' (--temperature) must be > 0 when sampling"),
        ({"early_stopping": "sometimes"}, "'early_stopping' (--early-stopping) must be"),
        ({"num_beams": 2, "num_return_sequences": 3}, "cannot exceed num_beams"),
    ],
)
def test_bad_options_name_the_option(options, message):
    with pytest.raises(PolyLMError, match="generation option") as error:
        GenerationConfig(**options)
    assert message in str(error.value)


def test_prompt_longer_than_context_is_refused():
    model = random_model()
    with pytest.raises(PolyLMError, match="prompt of 64 tokens does not fit the model's context of 64 tokens"):
        generate(model, [[5] * 64], GenerationConfig())


def test_generation_stops_at_the_context_end():
    model = random_model()
    result = generate(model, [[5] * 60], GenerationConfig(max_new_tokens=10, eos_token_id=None))[0][0]
    assert len(result.token_ids) == 4 and result.finish_reason == "length"
