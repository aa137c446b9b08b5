"""The command line: info, init, generate, and the help texts."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import random_model
from polylm.cli import build_parser, main
from polylm.generate import GenerationConfig, generate
from polylm.hf_checkpoint import load_model


@pytest.mark.parametrize(("preset", "count"), [("polylm-1.7b", "1,737,084,928"), ("polylm-13b", "13,906,790,400")])
def test_info_prints_exact_parameter_count(capsys, preset, count):
    assert main(["info", "--preset", preset]) == 0
    out = capsys.readouterr().out
    assert f"parameters  {count}" in out


def test_init_info_generate(tmp_path, capsys, corpus_tokenizer):
    model_dir = tmp_path / "model"
    tokenizer_dir = corpus_tokenizer.model_file.parent
    assert (
        main(["init", "--preset", "tiny", "--tokenizer", str(tokenizer_dir), "--out", str(model_dir), "--seed", "3"])
        == 0
    )
    captured = capsys.readouterr()
    assert f"vocab_size 8000 -> {corpus_tokenizer.vocab_size}" in captured.err
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.model",
        "tokenizer_config.json",
        "generation_config.json",
    ):
        assert (model_dir / name).exists(), name

    assert main(["info", "--model", str(model_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = load_model(model_dir)
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["config"]["vocab_size"] == corpus_tokenizer.vocab_size

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The river\nLe marché du village\n", encoding="utf-8")
    assert (
        main(["generate", "--model", str(model_dir), "--prompt-file", str(prompts), "--max-new-tokens", "5", "--json"])
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["prompt"] for line in lines] == ["The river", "Le marché du village"]
    greedy = GenerationConfig(max_new_tokens=5)
    for line in lines:
        expected = generate(model, [corpus_tokenizer.encode(line["prompt"])], greedy)[0][0].token_ids
        assert line["token_ids"] == expected and 1 <= len(expected) <= 5
        assert line["text"] == corpus_tokenizer.decode(expected)


def test_init_is_seeded(tmp_path, corpus_tokenizer):
    tokenizer_dir = str(corpus_tokenizer.model_file.parent)
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        main(["init", "--preset", "tiny", "--tokenizer", tokenizer_dir, "--out", str(tmp_path / name), "--seed", seed])
    a, b, c = (load_model(tmp_path / name).h[0].attn.c_attn.weight for name in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_greedy_with_cache_equals_recomputing_everything():
    model = random_model()
    prompt = [5, 17, 99, 3]
    got = generate(model, [prompt], GenerationConfig(max_new_tokens=8, eos_token_id=None))[0][0].token_ids
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(8):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert got == ids[len(prompt) :]


def test_generate_refuses_prompt_longer_than_context(tmp_path, capsys, corpus_tokenizer):
    model_dir = tmp_path / "model"
    main(["init", "--preset", "tiny", "--tokenizer", str(corpus_tokenizer.model_file.parent), "--out", str(model_dir)])
    capsys.readouterr()
    assert main(["generate", "--model", str(model_dir), "--prompt", "word " * 400]) == 1
    assert "prompt of" in (err := capsys.readouterr().err) and "does not fit the model's context of 256" in err


@pytest.mark.parametrize(
    ("argv", "phrase"),
    [
        (["--help"], "tokenizer"),
        (["info", "--help"], "without"),
        (["init", "--help"], "--tokenizer"),
        (["tokenizer", "train", "--help"], "lines**alpha"),
        (["tokenizer", "stats", "--help"], "LANG="),
        (["generate", "--help"], "--prompt-file"),
    ],
)
def test_help_explains(capsys, argv, phrase):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 0
    assert phrase in capsys.readouterr().out.replace("\n", " ")


def test_unknown_preset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["info", "--preset", "polylm-70b"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'polylm-70b'" in capsys.readouterr().err
