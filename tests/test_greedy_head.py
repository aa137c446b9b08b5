"""The int8 shortcut of greedy decoding returns the fp32 argmax: its error model, hard batches, real near-ties."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import TINY
from polylm.config import ModelConfig
from polylm.generate import GenerationConfig, generate, greedy_head
from polylm.generate.greedy_head import Int8ArgmaxHead, int8_argmax_head
from polylm.hf_checkpoint import save_model
from polylm.model import PolyLM, TiedEmbedding
from polylm.quantize import rows
from test_generate import PROMPTS, _assert_same, _hf, lively_model

pytestmark = pytest.mark.skipif(not rows.fbgemm_available(), reason="this PyTorch build has no fbgemm quantized ops")


def _embedding(vocab: int, hidden: int, seed: int = 0, std: float = 0.05) -> TiedEmbedding:
    embedding = TiedEmbedding(vocab, hidden)
    with torch.no_grad():
        embedding.weight.copy_(torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(seed)) * std)
    return embedding


def _exact_argmax(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (hidden.double() @ weight.double().T).argmax(dim=-1)


def test_the_kernel_stays_within_its_error_model():
    """fbgemm's product differs from x · ŵ_j by at most s/2 · |ŵ_j|_1: the term the bound is built on.

    Inputs: whole batches of normalized rows, with signs, ranges and magnitudes that move the tensor-wide scale and
    zero point around (all-positive, all-negative, mixed, one row much wider than another).
    """
    weight = torch.randn(3000, 96, generator=torch.Generator().manual_seed(1)) * 0.03
    quantized, scales = rows.quantize_rows(weight)
    packed = rows.prepack(quantized, scales)
    dequantized = quantized.double() * scales.double()[:, None]
    row_l1 = dequantized.abs().sum(dim=1)
    generator = torch.Generator().manual_seed(2)
    worst = 0.0
    for trial in range(200):
        size = int(torch.randint(1, 9, (1,), generator=generator))
        x = torch.randn(size, 96, generator=generator) * torch.rand(size, 1, generator=generator) * 10
        x += torch.randn(size, 1, generator=generator) * (trial % 3)  # shift: all-positive or all-negative rows
        normalized, _ = rows.normalized_rows(x)
        approx = torch.ops.quantized.linear_dynamic(normalized, packed, True).double()
        exact = normalized.double() @ dequantized.T
        allowed = float(rows.input_step(normalized)) / 2 * row_l1 * (1 + 1e-4) + 1e-6
        worst = max(worst, float(((approx - exact).abs() / allowed).max()))
    assert worst <= 1.0, f"the kernel's error exceeds its model by a factor {worst:.3f}"


def near_ties(weight: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Hidden states whose two best tokens differ by a gap of 1e-6..1e-3 of the logit scale (both signs).

    x = c (w_a + w_b) + t (w_a - w_b), with t solving x · (w_a - w_b) = gap: a and b stand far above every other
    token, and the int8 error (about 1e-2 of the scale here) is many times the gap.
    """
    generator = torch.Generator().manual_seed(seed)
    hidden = []
    weight = weight.double()
    for _ in range(count):
        a, b = torch.randperm(weight.shape[0], generator=generator)[:2].tolist()
        base = 3.0 * (weight[a] + weight[b]) / weight[a].norm()
        difference = weight[a] - weight[b]
        scale = float(base @ weight[a])
        gap = scale * 10 ** float(torch.empty(1).uniform_(-6, -3, generator=generator)) * (1 if len(hidden) % 2 else -1)
        t = (gap - float(base @ difference)) / float(difference @ difference)
        hidden.append(base + t * difference)
    return torch.stack(hidden).float()


def test_a_batch_of_rows_with_very_different_ranges():
    """Near-tied rows next to rows 30x wider, in one batch. fbgemm quantizes the whole batch with the wide rows'
    step, so a bound built from each row's own range (the code before this test: 29 wrong tokens of 320 here) is
    far too small for the narrow ones."""
    embedding = _embedding(4000, 64, seed=4)
    weight = embedding.weight.detach()
    head = Int8ArgmaxHead(embedding)
    generator = torch.Generator().manual_seed(3)
    wrong = 0
    for trial in range(40):
        narrow = near_ties(weight, 4, seed=100 + trial)
        wide = torch.randn(4, 64, generator=generator) * narrow.abs().max() * 30
        batch = torch.cat([narrow, wide])
        tokens = head.certified_argmax(batch)
        assert tokens is not None
        wrong += int((tokens != _exact_argmax(batch, weight)).sum())
    assert wrong == 0


def test_real_near_ties_are_decided_exactly():
    embedding = _embedding(4000, 64, seed=4)
    weight = embedding.weight.detach()
    hidden = near_ties(weight, 64, seed=5)
    logits = hidden.double() @ weight.double().T
    top2 = logits.topk(2, dim=1).values
    assert float((top2[:, 0] - top2[:, 1]).max() / logits.abs().max()) < 2e-3  # truly near-tied
    head = Int8ArgmaxHead(embedding)
    tokens = torch.cat([head.certified_argmax(hidden[i : i + 8]) for i in range(0, len(hidden), 8)])
    assert torch.equal(tokens, _exact_argmax(hidden, weight))


def test_the_near_ties_catch_an_undersized_bound():
    """The same rows with the bound cut a hundredfold: some answers must come out wrong, so the test above can fail."""
    embedding = _embedding(4000, 64, seed=4)
    hidden = near_ties(embedding.weight.detach(), 64, seed=5)
    head = Int8ArgmaxHead(embedding)
    head.row_l1 /= 100
    head.half_scales /= 100
    tokens = torch.cat([head.certified_argmax(hidden[i : i + 8]) for i in range(0, len(hidden), 8)])
    assert not torch.equal(tokens, _exact_argmax(hidden, embedding.weight.detach()))


def test_outlier_channels_are_multiplied_exactly():
    """Channels 15x their row's rms (trained models' outlier features) are kept out of the int8 product."""
    embedding = _embedding(3000, 64, seed=6)
    head = Int8ArgmaxHead(embedding)
    hidden = torch.randn(8, 64, generator=torch.Generator().manual_seed(7))
    hidden[:, [5, 40]] *= 15
    tokens = head.certified_argmax(hidden)
    assert sorted(head.sketch.outlier_channels) == [5, 40]
    assert torch.equal(tokens, _exact_argmax(hidden, embedding.weight.detach()))


def test_batched_greedy_equals_transformers_with_the_shortcut_on(tmp_path):
    """Left-padded prompts of different lengths, plain greedy (no penalty that would switch the shortcut off)."""
    ours = lively_model()
    save_model(ours, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    head = int8_argmax_head(ours)
    kwargs = dict(max_new_tokens=12, eos_token_id=None)
    rows_out = [g.token_ids for row in generate(ours, PROMPTS, GenerationConfig(**kwargs)) for g in row]
    assert head.decided >= 12 and head.undecided == 0  # every step went through the shortcut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_same(rows_out, _hf(hf, PROMPTS, do_sample=False, max_new_tokens=12))


def test_falls_back_when_candidates_are_many_and_backs_off():
    """Identical rows make every token a candidate: the full product answers, and the sketch rests a while."""
    embedding = TiedEmbedding(1000, 32)
    with torch.no_grad():
        embedding.weight.copy_(torch.randn(1, 32).expand(1000, 32) + 1e-7 * torch.randn(1000, 32))
    head = Int8ArgmaxHead(embedding)
    hidden = torch.randn(2, 32)
    expected = embedding.attend(hidden).argmax(dim=-1)
    for _ in range(3):
        assert torch.equal(head.argmax(hidden), expected)
    assert head.undecided == 2 and head.decided == 0 and head.skip == 2  # tried, rested 1 step, tried: rests 2


def test_follows_weight_changes_and_can_be_absent(monkeypatch):
    model = lively_model()
    prompt = [[5, 17, 99, 3]]
    config = GenerationConfig(max_new_tokens=10, eos_token_id=None)
    first = int8_argmax_head(model)
    with torch.no_grad():
        model.wte.weight.mul_(-1.0)  # the sketch of the old weights would now pick wrong tokens
    assert int8_argmax_head(model) is not first
    fast = generate(model, prompt, config)
    monkeypatch.setattr(greedy_head, "fbgemm_available", lambda: False)
    assert int8_argmax_head(model) is None
    assert generate(model, prompt, config) == fast


def test_not_used_for_quantized_or_bf16_models():
    model = PolyLM(ModelConfig(**{**TINY.to_dict(), "dtype": "bfloat16"})).to(torch.bfloat16)
    assert int8_argmax_head(model) is None
