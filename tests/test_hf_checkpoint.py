"""Hugging Face directories: every released layout loads bit for bit, and what we save transformers loads.

Weights are compared with torch.equal. Logits of both sides are then computed in float64 (an exact upcast of
the loaded weights), so the comparison tests what was loaded and how, not fp32 kernel rounding: fp32 forward
parity with transformers is tests/test_model.py's job. A misplaced or untransposed tensor moves logits by O(1).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from conftest import TINY, random_model, randomize
from polylm.cli import main
from polylm.hf_checkpoint import Scratch, config_to_hf, load_model, save_model, stored_tensors

TOLERANCE = 1e-9  # float64 logits
IDS = torch.randint(3, TINY.vocab_size, (2, 17), generator=torch.Generator().manual_seed(7))


def _hf_model(seed: int = 1) -> GPT2LMHeadModel:
    hf = GPT2LMHeadModel(GPT2Config(**config_to_hf(TINY))).eval()
    randomize(hf, seed=seed)
    return hf


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def _logits(model: torch.nn.Module) -> torch.Tensor:
    """float64 logits of IDS; `model` is upcast in place (either ours or transformers')."""
    with torch.no_grad():
        out = model.double()(IDS)
    return out if isinstance(out, torch.Tensor) else out.logits


def _write_legacy_bin(hf: GPT2LMHeadModel, out: Path, dtype: torch.dtype, shards: int) -> None:
    """The layout PolyLM was released in (transformers 4.31 / the Megatron converter): torch.save'd shards of
    `pytorch_model-0000k-of-0000n.bin` + index, with the converter's attn.bias/masked_bias buffers and lm_head."""
    state = {k: v.to(dtype) for k, v in hf.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    for layer in range(TINY.num_layers):
        state[f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones(64, 64, dtype=torch.bool))[None, None]
        state[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    keys = list(state)
    out.mkdir(parents=True)
    config = {
        **hf.config.to_dict(),
        "torch_dtype": str(dtype).removeprefix("torch."),
        "architectures": ["PolyLMHeadModel"],
    }
    config.pop("dtype", None)
    (out / "config.json").write_text(json.dumps(config))
    if shards == 1:
        torch.save(state, out / "pytorch_model.bin")
        return
    weight_map = {}
    for k in range(shards):
        name = f"pytorch_model-{k + 1:05d}-of-{shards:05d}.bin"
        part = {key: state[key] for key in keys[k::shards]}
        torch.save(part, out / name)
        weight_map.update(dict.fromkeys(part, name))
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _assert_same_weights(hf: GPT2LMHeadModel, ours, dtype: torch.dtype) -> None:
    hf_state = hf.state_dict()
    for name, param in ours.named_parameters():
        expected = hf_state[f"transformer.{name}"].to(dtype)
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            expected = expected.t()
        assert param.dtype == dtype
        assert torch.equal(param, expected), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shards", [1, 3])
def test_legacy_bin_checkpoint_loads_bit_for_bit(tmp_path, dtype, shards):
    hf = _hf_model()
    _write_legacy_bin(hf, tmp_path / "m", dtype, shards)
    ours = load_model(tmp_path / "m")  # dtype comes from torch_dtype
    _assert_same_weights(hf, ours, dtype)
    assert _max_diff(_logits(ours), _logits(hf.to(dtype))) <= TOLERANCE


@pytest.mark.parametrize("layout", ["bin", "safetensors"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ranks", [2, 3, 5])
def test_rows_read_per_rank_make_up_the_whole_tensor(tmp_path, layout, dtype, ranks):
    """FSDP's sharded load: each rank reads its dim-0 rows (as polylm orients a tensor: Conv1D transposed), into
    fp32; the ranks' rows put together are what `load_model` reads whole."""
    hf = _hf_model()
    if layout == "bin":
        _write_legacy_bin(hf, tmp_path / "m", dtype, shards=3)
    else:
        save_model(random_model(), tmp_path / "m", max_shard_bytes=60_000, dtype=str(dtype).removeprefix("torch."))
    whole = dict(load_model(tmp_path / "m", dtype=torch.float32).named_parameters())
    scratch = Scratch()
    for tensor in stored_tensors(tmp_path / "m", {name: tuple(p.shape) for name, p in whole.items()}):
        rows, per = whole[tensor.name].shape[0], -(-whole[tensor.name].shape[0] // ranks)
        pieces = []
        for first in range(0, ranks * per, per):
            first, end = min(first, rows), min(first + per, rows)
            pieces.append(torch.full((end - first, *whole[tensor.name].shape[1:]), float("nan")))
            tensor.copy_to(pieces[-1], scratch, rows=(first, end))
        assert torch.equal(torch.cat(pieces), whole[tensor.name]), tensor.name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("max_shard_size", [None, "60KB"])
def test_transformers_safetensors_save_loads(tmp_path, dtype, max_shard_size):
    hf = _hf_model().to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    hf.save_pretrained(tmp_path, **kwargs)
    assert (tmp_path / "model.safetensors.index.json").exists() == bool(max_shard_size)
    ours = load_model(tmp_path)
    _assert_same_weights(hf, ours, dtype)
    assert _max_diff(_logits(ours), _logits(hf)) <= TOLERANCE


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_our_save_loads_in_transformers(tmp_path, dtype, corpus_tokenizer):
    ours = random_model(TINY.replace(vocab_size=corpus_tokenizer.vocab_size))
    save_model(ours, tmp_path, tokenizer=corpus_tokenizer, max_shard_bytes=100_000, dtype=dtype)
    assert (tmp_path / "model.safetensors.index.json").exists()
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    reloaded = load_model(tmp_path)
    assert reloaded.wte.weight.dtype == hf.dtype == getattr(torch, dtype)
    expected = _logits(hf)
    assert _max_diff(_logits(reloaded), expected) <= TOLERANCE
    if dtype == "float32":
        assert _max_diff(_logits(ours), expected) <= TOLERANCE
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = "PolyLM speaks eighteen languages. 多语言模型。"
    assert hf_tokenizer.encode(text, add_special_tokens=False) == corpus_tokenizer.encode(text)
    assert hf_tokenizer.eos_token_id == 2


def test_transformers_save_of_our_model_round_trips(tmp_path):
    """our save -> transformers load -> transformers save -> our load: nothing lost on the way."""
    ours = random_model()
    save_model(ours, tmp_path / "a")
    AutoModelForCausalLM.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    again = load_model(tmp_path / "b")
    for (name, a), (_, b) in zip(ours.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(a, b), name


# ---- bad input: one line naming file and key, exit 1, no traceback ----


def _saved(tmp_path: Path, **save_kwargs) -> Path:
    out = tmp_path / "model"
    save_model(random_model(), out, **save_kwargs)
    return out


def _cli_error(capsys, model_dir: Path) -> str:
    code = main(["generate", "--model", str(model_dir), "--prompt", "hi"])
    stderr = capsys.readouterr().err
    err = stderr.strip().splitlines()[-1]  # a progress bar may stand above it
    assert code == 1
    assert err.startswith("polylm: error: ") and "Traceback" not in stderr
    return err


def test_missing_config(tmp_path, capsys):
    model = _saved(tmp_path)
    (model / "config.json").unlink()
    assert "config.json: file not found" in _cli_error(capsys, model)


def test_missing_directory(tmp_path, capsys):
    assert "model directory not found" in _cli_error(capsys, tmp_path / "nope")


def test_missing_weights(tmp_path, capsys):
    model = _saved(tmp_path)
    (model / "model.safetensors").unlink()
    assert "no weights found" in _cli_error(capsys, model)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model_type", "llama", "'model_type' is 'llama'"),
        ("architectures", ["LlamaForCausalLM"], "'architectures' names ['LlamaForCausalLM']"),
        ("tie_word_embeddings", False, "'tie_word_embeddings' = False"),
        ("activation_function", "relu", "'activation_function' = 'relu'"),
    ],
)
def test_unsupported_architecture(tmp_path, capsys, key, value, message):
    model = _saved(tmp_path)
    config = json.loads((model / "config.json").read_text())
    config[key] = value
    (model / "config.json").write_text(json.dumps(config))
    err = _cli_error(capsys, model)
    assert str(model / "config.json") in err and message in err


def test_shape_mismatch(tmp_path, capsys):
    model = _saved(tmp_path)
    config = json.loads((model / "config.json").read_text())
    config["n_positions"] = 32
    (model / "config.json").write_text(json.dumps(config))
    err = _cli_error(capsys, model)
    assert "model.safetensors: tensor 'transformer.wpe.weight' has shape (64, 64), expected (32, 64)" in err


def _edit_weights(model: Path, edit) -> None:
    state = load_file(model / "model.safetensors")
    edit(state)
    save_file(state, model / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor(tmp_path, capsys):
    model = _saved(tmp_path)
    _edit_weights(model, lambda state: state.pop("transformer.h.1.mlp.c_fc.bias"))
    assert "missing tensors h.1.mlp.c_fc.bias" in _cli_error(capsys, model)


def test_unexpected_tensor(tmp_path, capsys):
    model = _saved(tmp_path)
    _edit_weights(model, lambda state: state.update({"transformer.h.0.attn.rotary.inv_freq": torch.ones(4)}))
    assert "unexpected tensors transformer.h.0.attn.rotary.inv_freq (in model.safetensors)" in _cli_error(capsys, model)


def test_tokenizer_larger_than_the_embedding(tmp_path, capsys, corpus_tokenizer):
    model = _saved(tmp_path)  # vocab 1000 model
    shutil.copy(corpus_tokenizer.model_file, model / "tokenizer.model")
    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] = corpus_tokenizer.vocab_size - 1
    (model / "config.json").write_text(json.dumps(config))
    err = _cli_error(capsys, model)
    assert f"tokenizer has {corpus_tokenizer.vocab_size} pieces" in err and "'vocab_size' is only" in err


@pytest.mark.parametrize("layout", ["safetensors", "bin"])
def test_corrupt_shard(tmp_path, capsys, layout):
    if layout == "safetensors":
        model = _saved(tmp_path, max_shard_bytes=100_000)
        shard = sorted(model.glob("model-*.safetensors"))[1]
    else:
        model = tmp_path / "model"
        _write_legacy_bin(_hf_model(), model, torch.float32, shards=3)
        shard = sorted(model.glob("pytorch_model-*.bin"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    err = _cli_error(capsys, model)
    assert str(shard) in err and "corrupt or truncated" in err


def test_index_naming_a_missing_shard(tmp_path, capsys):
    model = _saved(tmp_path, max_shard_bytes=100_000)
    shard = sorted(model.glob("model-*.safetensors"))[0]
    shard.unlink()
    err = _cli_error(capsys, model)
    assert "model.safetensors.index.json: lists shard" in err and shard.name in err


def test_console_script_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "polylm.cli", "generate", "--model", str(tmp_path), "--prompt", "x"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"polylm: error: {tmp_path / 'config.json'}: file not found"
