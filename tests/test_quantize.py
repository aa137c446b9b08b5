"""`polylm quantize`: the stored formats, the directory every --model flag loads, refusals, and the quality."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import SHARED_DATA, randomize
from polylm import pipeline
from polylm.cli import main
from polylm.config import ModelConfig
from polylm.errors import PolyLMError
from polylm.generate import GenerationConfig, generate
from polylm.hf_checkpoint import config_from_hf, load_model, save_model
from polylm.model import PolyLM
from polylm.quantize.format import dequantize_groups, quantize_groups
from polylm.quantize.layers import Int4Linear, Int8Embedding, Int8Linear
from polylm.quantize.rows import quantize_rows
from serve_support import request, start_cli_server, stop

CONFIG = ModelConfig(name="q-test", vocab_size=2000, max_position_embeddings=64, hidden_size=128, num_layers=2,
                     num_heads=4)  # fmt: skip


def _model_dir(tmp_path, tokenizer, seed: int = 0):
    model = PolyLM(CONFIG.replace(vocab_size=tokenizer.vocab_size))
    randomize(model, seed)
    return save_model(model.eval(), tmp_path / "source", tokenizer=tokenizer)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, corpus_tokenizer):
    """A source model directory and its int8 and int4 quantizations, written by the CLI."""
    root = tmp_path_factory.mktemp("quantize")
    source = _model_dir(root, corpus_tokenizer)
    for bits in (8, 4):
        assert main(["quantize", str(source), "--out", str(root / f"int{bits}"), "--bits", str(bits)]) == 0
    return source, root / "int8", root / "int4"


def test_int4_groups_round_trip_within_half_a_step():
    weight = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    nibbles, scales, zeros = quantize_groups(weight, 64)
    restored = dequantize_groups(nibbles, scales, zeros)
    step = scales.float().repeat_interleave(64, dim=1)
    assert float(((restored - weight).abs() / step).max()) <= 0.5 + 1e-2  # half a step, plus bf16 rounding of zero
    values = torch.stack([nibbles & 0x0F, nibbles >> 4], dim=-1).view(64, 256)
    assert values.min() == 0 and values.max() == 15  # each group's range is used


def test_the_int4_kernel_computes_the_stored_weights():
    """Int4Linear (PyTorch's packed CPU kernel) equals x @ dequantized.T: packing and formula as documented."""
    weight = torch.randn(48, 256, generator=torch.Generator().manual_seed(1))
    bias = torch.randn(48)
    nibbles, scales, zeros = quantize_groups(weight, 32)
    x = torch.randn(5, 256).bfloat16().float()
    expected = x @ dequantize_groups(nibbles, scales, zeros).T + bias
    got = Int4Linear(nibbles, scales, zeros, bias)(x)
    assert torch.allclose(got, expected, rtol=1e-2, atol=1e-2 * float(expected.abs().max()))


def test_the_int8_kernels_compute_the_stored_weights():
    weight = torch.randn(40, 64, generator=torch.Generator().manual_seed(2))
    quantized, scales = quantize_rows(weight)
    dequantized = quantized.float() * scales[:, None]
    x = torch.randn(3, 64).bfloat16().float()
    linear = Int8Linear(quantized, scales, None)(x)
    assert torch.allclose(linear, x @ dequantized.T, rtol=1e-2, atol=1e-2 * float(linear.abs().max()))
    embedding = Int8Embedding(quantized, scales, torch.float32)
    assert torch.equal(embedding(torch.tensor([[3, 7]]))[0], dequantized[[3, 7]])
    logits = embedding.attend(x)  # int8 activations per row: close, not equal
    assert float((logits - x @ dequantized.T).abs().max()) < 0.05 * float(logits.abs().max())


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_directory_loads_and_stays_close(quantized, bits):
    source, *dirs = quantized
    model = load_model(dirs[0] if bits == 8 else dirs[1])
    reference = load_model(source)
    assert isinstance(model.wte, Int8Embedding)
    assert isinstance(model.h[0].mlp.c_fc, Int8Linear if bits == 8 else Int4Linear)
    ids = torch.randint(0, CONFIG.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ours, theirs = model(ids), reference(ids)
    relative = float((ours - theirs).norm() / theirs.norm())
    assert relative < (0.03 if bits == 8 else 0.25), relative  # random weights: 4 bits cost more than trained ones
    files = {path.name for path in (dirs[0] if bits == 8 else dirs[1]).iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "generation_config.json"} <= files
    assert sum(p.stat().st_size for p in source.glob("*.safetensors")) > 2.5 * sum(
        p.stat().st_size for p in (dirs[0] if bits == 8 else dirs[1]).glob("*.safetensors")
    )


def test_every_entry_point_loads_it(quantized, capsys):
    """generate, chat's streaming, pipeline, serve and evaluate all take the quantized directory as --model."""
    _, int8, int4 = quantized
    assert main(["generate", "--model", str(int4), "--prompt", "The river", "--max-new-tokens", "4", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert 1 <= len(record["token_ids"]) <= 4
    assert main(["info", "--model", str(int4), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "int4 (groups of 64), int8 embedding"
    generator = pipeline("text-generation", model=str(int8), max_new_tokens=4)
    assert isinstance(generator("Le marché")["text"], str)
    assert "".join(generator.generator.stream("hi", GenerationConfig(max_new_tokens=3))) is not None
    process, url = start_cli_server(int8)
    try:
        status, body = request(url, "POST", "/v1/completions", {"prompt": "The river", "max_tokens": 3})
        assert status == 200 and body["usage"]["completion_tokens"] >= 1
    finally:
        stop(process)
    xcopa = SHARED_DATA / "benchmarks"
    if xcopa.is_dir():
        out = quantized[0].parent / "eval.json"
        args = ["evaluate", "--model", str(int4), "--tasks", "xcopa", "--data-dir", str(xcopa), "--limit", "4"]
        assert main([*args, "--output", str(out)]) == 0
        assert json.loads(out.read_text())["results"]["xcopa"]


def test_shards_stream_and_reload_identically(tmp_path, corpus_tokenizer):
    """Small output shards (an index, several files) give the same model as one file."""
    from polylm.quantize.convert import quantize_model

    source = _model_dir(tmp_path, corpus_tokenizer, seed=1)
    whole = quantize_model(source, tmp_path / "whole", 4, 32)
    split = quantize_model(source, tmp_path / "split", 4, 32, max_shard_bytes=100_000)
    assert len(whole["files"]) == 1 and len(split["files"]) >= 4
    assert (tmp_path / "split" / "model.safetensors.index.json").exists()
    ids = torch.randint(0, CONFIG.vocab_size, (1, 16))
    with torch.inference_mode():
        assert torch.equal(load_model(tmp_path / "whole")(ids), load_model(tmp_path / "split")(ids))


def _error(capsys, argv) -> str:
    code = main(argv)
    stderr = capsys.readouterr().err
    assert code == 1 and "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polylm: error: "), stderr
    return lines[0]


def test_bad_input_is_one_line(quantized, tmp_path, capsys):
    source, int8, _ = quantized
    out = str(tmp_path / "q")
    assert "--bits must be 8 or 4, got 3" in _error(capsys, ["quantize", str(source), "--out", out, "--bits", "3"])
    message = _error(capsys, ["quantize", str(source), "--out", out, "--bits", "8", "--group-size", "64"])
    assert "--group-size applies to --bits 4" in message
    message = _error(capsys, ["quantize", str(source), "--out", out, "--bits", "4", "--group-size", "48"])
    assert "--group-size must be one of 32, 64, 128, 256" in message
    assert "already quantized" in _error(capsys, ["quantize", str(int8), "--out", out, "--bits", "4"])
    missing = str(tmp_path / "no" / "such" / "dir")
    assert "does not exist" in _error(capsys, ["quantize", str(source), "--out", missing, "--bits", "8"])
    message = _error(capsys, ["generate", "--model", str(int8), "--prompt", "x", "--device", "cuda"])
    assert "quantized models run on the CPU" in message


def test_a_newer_format_is_refused_by_name(quantized, tmp_path, capsys):
    newer = tmp_path / "newer"
    shutil.copytree(quantized[1], newer)
    config = json.loads((newer / "config.json").read_text())
    config["quantization_config"]["format_version"] = 2
    (newer / "config.json").write_text(json.dumps(config))
    message = _error(capsys, ["generate", "--model", str(newer), "--prompt", "x"])
    assert "written by a newer polylm" in message and "upgrade polylm" in message


def test_older_polylm_and_transformers_refuse_it_by_name(quantized):
    """Earlier polylm read config.json with `config_from_hf` alone; transformers reads its model_type."""
    int8 = quantized[1]
    config = json.loads((int8 / "config.json").read_text())
    with pytest.raises(PolyLMError, match="'model_type' is 'polylm_quantized'; only 'gpt2'"):
        config_from_hf(config, int8 / "config.json")
    script = (
        "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained(__import__('sys').argv[1])"
    )
    result = subprocess.run([sys.executable, "-c", script, str(int8)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "model type `polylm_quantized` but Transformers does not recognize this architecture" in result.stderr
    with pytest.raises(ValueError, match="polylm_quantized"):
        AutoModelForCausalLM.from_pretrained(int8)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "corpora").is_dir(), reason="needs ../shared/data/corpora for the tiny recipe")
def test_quality_on_a_model_trained_by_the_tiny_recipe(trained_tiny):
    """int8 within 1% and int4 (group 64) within 5% of the fp32 held-out perplexity in every language; int8 greedy
    continuations equal fp32's on at least 90% of 64 held-out prompts."""
    from polylm.quantize.convert import quantize_model
    from polylm.quantize.quality import compare

    model_dir, data_dir = trained_tiny
    for bits, limit in ((8, 0.01), (4, 0.05)):
        out = model_dir.parent / f"int{bits}"
        quantize_model(model_dir, out, bits)
        result = compare(model_dir, out, data_dir)
        changes = {lang: round(row["change"], 4) for lang, row in result["perplexity"].items()}
        print(f"int{bits} perplexity change by language: {changes}; greedy same "
              f"{result['greedy_same']}/{result['greedy_prompts']}")  # fmt: skip
        assert len(changes) >= 18 and max(abs(c) for c in changes.values()) <= limit, changes
        if bits == 8:
            assert result["greedy_prompts"] == 64 and result["greedy_same"] >= 58
    greedy = generate(load_model(model_dir.parent / "int4"), [[5, 6, 7]], GenerationConfig(max_new_tokens=4))
    assert len(greedy[0][0].token_ids) >= 1
