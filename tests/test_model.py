"""The model is GPT2LMHeadModel as PolyLM uses it: logits equal transformers', cache equals full forward."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

import polylm.model
from conftest import TINY, random_model, randomize
from polylm.config import preset
from polylm.hf_checkpoint import config_to_hf, load_model
from polylm.loss import linear_cross_entropy
from polylm.model import PolyLM, build_model, count_parameters

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory: pytest.TempPathFactory) -> tuple[GPT2LMHeadModel, PolyLM]:
    """A transformers GPT-2 with PolyLM's shape rules and random weights, and our model loaded from its save."""
    from transformers import GPT2Config

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(**config_to_hf(TINY))).eval()
    randomize(hf, seed=1)
    out = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(out)
    return hf, load_model(out)


def _prompt(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, TINY.vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))


def test_config_is_polylm_shaped():
    hf = config_to_hf(TINY)
    assert hf["activation_function"] == "gelu_fast"
    assert hf["layer_norm_epsilon"] == 1e-5
    assert hf["tie_word_embeddings"] is True


def test_logits_equal_transformers_single_prompt(hf_and_ours):
    hf, ours = hf_and_ours
    ids = _prompt(20)
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert expected.abs().max() > 1.0  # random weights give non-trivial logits
    assert (got - expected).abs().max().item() <= TOLERANCE


def test_logits_equal_transformers_right_padded_batch(hf_and_ours):
    hf, ours = hf_and_ours
    lengths = [12, 7, 3]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = _prompt(length, seed=row)[0]
        mask[row, :length] = 1
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask)
        alone = [ours(ids[row : row + 1, :length]) for row, length in enumerate(lengths)]
    for row, length in enumerate(lengths):
        assert (got[row, :length] - expected[row, :length]).abs().max().item() <= TOLERANCE
        assert (got[row, :length] - alone[row][0]).abs().max().item() <= TOLERANCE


def test_left_padded_batch_with_position_ids_equals_unpadded():
    model = random_model()
    lengths = [9, 4]
    ids = torch.zeros(2, 9, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, 9 - length :] = _prompt(length, seed=row)[0]
        mask[row, 9 - length :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        got = model(ids, attention_mask=mask, position_ids=positions)
        for row, length in enumerate(lengths):
            alone = model(ids[row : row + 1, 9 - length :])
            assert (got[row, 9 - length :] - alone[0]).abs().max().item() <= TOLERANCE
    assert torch.isfinite(got).all()  # fully padded query rows must not turn into NaN


def test_kv_cache_step_by_step_equals_full_forward():
    model = random_model()
    ids = _prompt(16)
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(batch_size=1, max_length=16)
        chunks = [model(ids[:, :5], cache=cache)]  # prefill, then one token at a time
        chunks += [model(ids[:, t : t + 1], cache=cache) for t in range(5, 16)]
    assert cache.length == 16
    assert (torch.cat(chunks, dim=1) - full).abs().max().item() <= TOLERANCE


def test_kv_cache_with_padding_mask_equals_full_forward():
    model = random_model()
    ids = _prompt(10).repeat(2, 1)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # second row left-padded by 3
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=positions)
        cache = model.new_cache(batch_size=2, max_length=10)
        steps = [model(ids[:, :6], attention_mask=mask[:, :6], position_ids=positions[:, :6], cache=cache)]
        for t in range(6, 10):
            steps.append(model(ids[:, t : t + 1], mask[:, : t + 1], positions[:, t : t + 1], cache=cache))
    got = torch.cat(steps, dim=1)
    assert (got[0] - full[0]).abs().max().item() <= TOLERANCE
    assert (got[1, 3:] - full[1, 3:]).abs().max().item() <= TOLERANCE


def test_last_token_only_equals_last_row():
    model = random_model()
    ids = _prompt(8)
    with torch.no_grad():
        assert (model(ids, last_token_only=True)[:, -1] - model(ids)[:, -1]).abs().max().item() <= TOLERANCE


def test_embeddings_are_tied():
    model = random_model()
    assert not any("lm_head" in name for name, _ in model.named_parameters())
    ids = _prompt(4)
    with torch.no_grad():
        before = model(ids)
        model.wte.weight[5].add_(1.0)  # row 5 is only an output row for these ids unless sampled as input
        after = model(ids)
    assert (after[..., 5] - before[..., 5]).abs().max() > 0


def test_megatron_init():
    config = TINY.replace(num_layers=8, hidden_size=256, num_heads=4)
    model = build_model(config, seed=3)
    scaled = config.init_std / math.sqrt(2 * config.num_layers)
    block = model.h[0]
    assert block.attn.c_attn.weight.std().item() == pytest.approx(config.init_std, rel=0.02)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert model.wte.weight.std().item() == pytest.approx(config.init_std, rel=0.02)
    assert block.mlp.c_fc.bias.abs().max() == 0
    assert torch.equal(model.ln_f.weight, torch.ones_like(model.ln_f.weight))
    again = build_model(config, seed=3)
    assert torch.equal(again.h[2].mlp.c_fc.weight, model.h[2].mlp.c_fc.weight)


def test_bfloat16_forward_close_to_float32():
    model = build_model(TINY.replace(init_std=0.2), seed=0)
    ids = _prompt(12)
    with torch.no_grad():
        reference = model(ids)
        bf16 = model.to(torch.bfloat16)(ids)
    assert bf16.dtype == torch.bfloat16
    assert (bf16.float() - reference).abs().max().item() < 0.05 * reference.abs().max().item()


def test_count_parameters_matches_allocated_model():
    assert count_parameters(TINY) == sum(p.numel() for p in PolyLM(TINY).parameters())


@pytest.mark.parametrize(("name", "expected"), [("polylm-1.7b", 1_737_084_928), ("polylm-13b", 13_906_790_400)])
def test_preset_parameter_counts(name, expected):
    assert count_parameters(preset(name)) == expected


def test_sequence_longer_than_context_is_refused():
    model = random_model()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(_prompt(TINY.max_position_embeddings + 1))


@pytest.mark.parametrize(("ignored", "chunk"), [(0, 512), (7, 512), (7, 16)])
def test_fused_training_loss_equals_cross_entropy(monkeypatch, ignored, chunk):
    """The chunked output layer + loss gives F.cross_entropy's loss and gradients, with -100 targets skipped."""
    monkeypatch.setattr(polylm.model, "linear_cross_entropy", functools.partial(linear_cross_entropy, chunk=chunk))
    config = TINY.replace(vocab_size=300)
    fused, reference = random_model(config), random_model(config)
    ids = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(1))
    targets = torch.roll(ids, -1, dims=1)
    targets[0, :ignored] = -100
    mean, per_token = fused.train()(ids, targets=targets)
    logits = reference.train()(ids)
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)
    (mean * 3).backward()
    (expected.sum() / (targets != -100).sum() * 3).backward()
    assert not per_token.requires_grad
    assert (per_token - expected.detach()).abs().max() < 1e-5
    assert (per_token[0, :ignored] == 0).all()
    for (name, ours), theirs in zip(fused.named_parameters(), reference.parameters(), strict=True):
        assert (ours.grad - theirs.grad).abs().max() < 1e-6, name
