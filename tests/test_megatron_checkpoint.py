"""`polylm convert --from/--to megatron`: exact round trips for any TP x PP split, a per-head QKV reference written
from Megatron's documented layout, one attention layer computed the way Megatron's forward does, padded
vocabularies, PolyLM's special ids, and one-line refusals."""

from __future__ import annotations

import argparse
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize
from polylm.cli import main
from polylm.config import ModelConfig
from polylm.hf_checkpoint import load_model, save_model
from polylm.model import PolyLM

CONFIG = ModelConfig(name="megatron-test", vocab_size=2000, max_position_embeddings=64, hidden_size=64, num_layers=4,
                     num_heads=4)  # fmt: skip


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory, corpus_tokenizer):
    """A random 2,000-piece model (the corpus tokenizer's size) saved in polylm's Hugging Face layout."""
    model = PolyLM(CONFIG)
    randomize(model, seed=3)
    out = tmp_path_factory.mktemp("hf") / "model"
    save_model(model.eval(), out, corpus_tokenizer)
    return out


def _to_megatron(hf_model, out, tp, pp, *extra) -> None:
    args = ["convert", "--to", "megatron", str(hf_model), "--out", str(out), "--tp", str(tp), "--pp", str(pp)]
    assert main([*args, *extra]) == 0


def _rank_file(root, tp_rank, pp_rank, pp, name="release"):
    folder = f"mp_rank_{tp_rank:02d}" + (f"_{pp_rank:03d}" if pp > 1 else "")
    return root / name / folder / "model_optim_rng.pt"


def _load(path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (4, 2)])
def test_round_trip_is_exact(hf_model, tmp_path, corpus_tokenizer, tp, pp):
    megatron, back = tmp_path / "megatron", tmp_path / "back"
    _to_megatron(hf_model, megatron, tp, pp)
    assert (megatron / "latest_checkpointed_iteration.txt").read_text() == "release"
    files = sorted(p.parent.name for p in (megatron / "release").glob("*/model_optim_rng.pt"))
    assert len(files) == tp * pp
    tokenizer = corpus_tokenizer.model_file.parent
    assert (
        main(["convert", "--from", "megatron", str(megatron), "--out", str(back), "--tokenizer", str(tokenizer)]) == 0
    )
    original, converted = load_model(hf_model), load_model(back)
    originals = dict(original.named_parameters())
    for name, tensor in converted.named_parameters():
        assert torch.equal(tensor, originals[name]), name
    assert len(originals) == len(dict(converted.named_parameters()))
    ids = torch.tensor([corpus_tokenizer.encode("Die Würde des Menschen ist unantastbar.")])
    assert torch.equal(original(ids), converted(ids))


def test_qkv_of_each_rank_matches_a_reference_built_from_the_documented_layout(hf_model, tmp_path):
    """Megatron (checkpoint_version >= 2) keeps the fused QKV rows of rank r as, for each of its heads g in order,
    q_g then k_g then v_g (head_dim rows each), with heads r*H/TP ... (r+1)*H/TP - 1."""
    tp, pp = 2, 2
    _to_megatron(hf_model, tmp_path / "m", tp, pp)
    model = load_model(hf_model)
    heads, head_dim, hidden = CONFIG.num_heads, CONFIG.head_dim, CONFIG.hidden_size
    per_rank, per_stage = heads // tp, CONFIG.num_layers // pp
    for layer in range(CONFIG.num_layers):
        weight = model.h[layer].attn.c_attn.weight.detach()  # rows [q | k | v], as Hugging Face has them
        bias = model.h[layer].attn.c_attn.bias.detach()
        for rank in range(tp):
            rows: list[int] = []
            for g in range(rank * per_rank, (rank + 1) * per_rank):
                for part in range(3):  # q, k, v
                    start = part * hidden + g * head_dim
                    rows.extend(range(start, start + head_dim))
            order = torch.tensor(rows)
            state = _load(_rank_file(tmp_path / "m", rank, layer // per_stage, pp))
            encoder = state["model"]["language_model"]["encoder"]
            key = f"layers.{layer % per_stage}.self_attention.query_key_value"
            assert torch.equal(encoder[f"{key}.weight"], weight[order])
            assert torch.equal(encoder[f"{key}.bias"], bias[order])


def test_one_attention_layer_computed_as_megatron_does_equals_polylm(hf_model, tmp_path, corpus_tokenizer):
    """Layer 0's attention from the TP-2 rank files: each rank attends with its own heads (per-head [3, head_dim]
    split of its fused rows), the row-parallel dense sums the ranks' partial outputs, then adds the bias."""
    tp = 2
    _to_megatron(hf_model, tmp_path / "m", tp, 1)
    states = [_load(_rank_file(tmp_path / "m", rank, 0, 1)) for rank in range(tp)]
    ids = torch.tensor([corpus_tokenizer.encode("Everyone has the right to life, liberty and security of person.")])
    length, heads_per_rank, head_dim = ids.shape[1], CONFIG.num_heads // tp, CONFIG.head_dim
    language = [s["model"]["language_model"] for s in states]
    embedding = torch.cat([lm["embedding"]["word_embeddings"]["weight"] for lm in language])
    x = embedding[ids] + language[0]["embedding"]["position_embeddings"]["weight"][:length]
    enc = [lm["encoder"] for lm in language]
    x = F.layer_norm(x, (CONFIG.hidden_size,), enc[0]["layers.0.input_layernorm.weight"],
                     enc[0]["layers.0.input_layernorm.bias"], CONFIG.layer_norm_eps)  # fmt: skip
    out = enc[0]["layers.0.self_attention.dense.bias"].clone()
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for rank in range(tp):
        qkv = x @ enc[rank]["layers.0.self_attention.query_key_value.weight"].T
        qkv = (qkv + enc[rank]["layers.0.self_attention.query_key_value.bias"]).view(1, length, heads_per_rank, 3, -1)
        q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))  # (1, heads, length, head_dim)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(head_dim)).masked_fill(~causal, float("-inf"))
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, length, -1)
        out = out + context @ enc[rank]["layers.0.self_attention.dense.weight"].T
    model = load_model(hf_model)
    captured = {}
    model.h[0].attn.register_forward_hook(lambda module, inputs, output: captured.setdefault("attention", output))
    model(ids)
    assert torch.allclose(captured["attention"], out, atol=1e-5), (captured["attention"] - out).abs().max()


def test_padded_vocabulary_is_trimmed_and_special_ids_are_polylms(hf_model, tmp_path, corpus_tokenizer):
    megatron = tmp_path / "m"
    _to_megatron(hf_model, megatron, 4, 1, "--iteration", "1200")
    assert (megatron / "latest_checkpointed_iteration.txt").read_text() == "1200"
    rows = [
        _load(_rank_file(megatron, r, 0, 1, "iter_0001200"))["model"]["language_model"]["embedding"] for r in range(4)
    ]
    assert sum(e["word_embeddings"]["weight"].shape[0] for e in rows) == 2048  # padded to a multiple of 128 x TP
    state = _load(_rank_file(megatron, 0, 0, 1, "iter_0001200"))
    state["args"].vocab_size = None  # as in a training run's args: only the tokenizer knows the real size
    torch.save(state, _rank_file(megatron, 0, 0, 1, "iter_0001200"))
    plain, beside, trimmed = tmp_path / "plain", tmp_path / "beside", tmp_path / "trimmed"
    assert main(["convert", "--from", "megatron", str(megatron), "--out", str(beside)]) == 0
    assert json.loads((beside / "config.json").read_text())["vocab_size"] == 2000  # the tokenizer --to left there
    (megatron / "tokenizer.model").unlink()
    assert main(["convert", "--from", "megatron", str(megatron), "--out", str(plain)]) == 0
    assert json.loads((plain / "config.json").read_text())["vocab_size"] == 2048  # padded rows kept without one
    tokenizer = str(corpus_tokenizer.model_file.parent)
    assert main(["convert", "--from", "megatron", str(megatron), "--out", str(trimmed), "--tokenizer", tokenizer]) == 0
    config = json.loads((trimmed / "config.json").read_text())
    assert (config["vocab_size"], config["bos_token_id"], config["eos_token_id"]) == (2000, 1, 2)
    assert (trimmed / "tokenizer.model").exists()


def _break(kind: str, megatron):
    if kind == "missing rank":
        shutil.rmtree(megatron / "release" / "mp_rank_01")
    elif kind in ("other iteration", "old version"):
        path = _rank_file(megatron, 1, 0, 1)
        state = _load(path)
        state.update({"iteration": 7} if kind == "other iteration" else {"checkpoint_version": 1.0})
        if kind == "old version":
            torch.save(state, _rank_file(megatron, 0, 0, 1))
        torch.save(state, path)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing rank", "missing ranks mp_rank_01 of a 2 x 1 (TP x PP) split"),
        ("other iteration", "ranks of different saves"),
        ("old version", "checkpoint_version 1.0 is not supported"),
    ],
)
def test_bad_megatron_checkpoints_are_one_line(hf_model, tmp_path, capsys, kind, message):
    megatron, out = tmp_path / "m", tmp_path / "out"
    _to_megatron(hf_model, megatron, 2, 1)
    _break(kind, megatron)
    capsys.readouterr()
    assert main(["convert", "--from", "megatron", str(megatron), "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error
    assert not out.exists()


def test_tp_that_does_not_divide_the_heads_is_one_line(hf_model, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["convert", "--to", "megatron", str(hf_model), "--out", str(out), "--tp", "3"]) == 1
    assert "4 heads / FFN 256 do not split over --tp 3" in capsys.readouterr().err
    assert not out.exists()


def test_version_2_from_an_iteration_folder_loads_in_transformers(hf_model, tmp_path, corpus_tokenizer):
    """checkpoint_version 2.0 has the same per-head layout; the iter_N folder itself may be given."""
    from transformers import GPT2LMHeadModel

    megatron, back = tmp_path / "m", tmp_path / "back"
    _to_megatron(hf_model, megatron, 2, 2, "--iteration", "50")
    for path in (megatron / "iter_0000050").glob("*/model_optim_rng.pt"):
        state = _load(path)
        state["checkpoint_version"] = 2.0
        torch.save(state, path)
    tokenizer = str(corpus_tokenizer.model_file.parent)
    assert main(["convert", "--from", "megatron", str(megatron / "iter_0000050"), "--out", str(back),
                 "--tokenizer", tokenizer]) == 0  # fmt: skip
    ids = torch.tensor([corpus_tokenizer.encode("Tout le monde a droit à la vie.")])
    expected = load_model(hf_model)(ids)
    assert torch.allclose(GPT2LMHeadModel.from_pretrained(back).eval()(ids).logits, expected, atol=1e-5)
