"""GGUF export: what the file says, llama.cpp running it (logits, greedy, tokenizer, chat template), refusals."""

from __future__ import annotations

import json
import random

import gguf
import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from polylm.cli import main
from polylm.config import ModelConfig
from polylm.demo.corpus import held_out_lines, languages
from polylm.generate import GenerationConfig, generate
from polylm.gguf import tensor_name, vocabulary
from polylm.hf_checkpoint import load_model, save_model
from polylm.model import PolyLM, build_model
from polylm.templates import TEMPLATES, render_messages

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is the peer these tests run the files in")
from polylm.gguf_check import run  # noqa: E402  (needs llama_cpp)

POLYLM_SHAPED = ModelConfig(name="polylm-shaped", vocab_size=256000, max_position_embeddings=256, hidden_size=256,
                            num_layers=2, num_heads=4)  # fmt: skip
"""PolyLM's layout and its 256,000-row tied embedding, narrow enough for CI."""


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, corpus_tokenizer):
    config = ModelConfig(name="gguf-small", vocab_size=4096, max_position_embeddings=128, hidden_size=64,
                         num_layers=2, num_heads=4)  # fmt: skip
    model = build_model(config, seed=0)
    return save_model(model, tmp_path_factory.mktemp("gguf") / "model", tokenizer=corpus_tokenizer)


def test_every_parameter_has_a_llama_cpp_name():
    names = [tensor_name(name) for name, _ in PolyLM(POLYLM_SHAPED.replace(vocab_size=8)).named_parameters()]
    assert len(set(names)) == len(names)
    assert {"token_embd.weight", "position_embd.weight", "output_norm.weight", "blk.1.ffn_down.bias"} <= set(names)
    assert "output.weight" not in names  # tied: llama.cpp falls back to token_embd


def test_vocabulary_types_and_padding(corpus_tokenizer):
    pieces, scores, types = vocabulary(corpus_tokenizer, corpus_tokenizer.vocab_size + 3)
    assert pieces[:3] == [b"<unk>", b"<s>", b"</s>"]
    assert types[:3] == [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    assert gguf.TokenType.BYTE in types and pieces[types.index(gguf.TokenType.BYTE)].startswith(b"<0x")
    assert pieces[-3:] == [b"[PAD1]", b"[PAD2]", b"[PAD3]"] and set(types[-3:]) == {gguf.TokenType.UNUSED}
    assert scores[5] == pytest.approx(corpus_tokenizer.sp.get_score(5))


def test_the_file_carries_what_llama_cpp_needs(small_model, tmp_path, capsys):
    out = tmp_path / "model.gguf"
    assert main(["export", str(small_model), "--out", str(out), "--outtype", "f16", "--template", "chat"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["outtype"] == "f16" and summary["tokenizer_pieces"] < summary["vocab"] == 4096
    reader = gguf.GGUFReader(out)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "gpt2" and fields["tokenizer.ggml.model"] == "llama"
    assert fields["tokenizer.ggml.add_bos_token"] is False and fields["tokenizer.ggml.eos_token_id"] == 2
    assert len(fields["tokenizer.ggml.tokens"]) == 4096 and fields["gpt2.context_length"] == 128
    assert fields["tokenizer.chat_template"] == fields["tokenizer.chat_template.chat"]
    assert set(fields["tokenizer.chat_templates"]) == set(TEMPLATES)
    types = {tensor.name: tensor.tensor_type.name for tensor in reader.tensors}
    assert types["token_embd.weight"] == "F16" and types["blk.0.attn_qkv.weight"] == "F16"
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_qkv.bias"] == "F32"
    source = load_model(small_model)
    qkv = next(t for t in reader.tensors if t.name == "blk.1.attn_qkv.weight")
    stored = np.asarray(qkv.data).reshape(3 * 64, 64)  # (out, in), as nn.Linear holds it
    assert np.array_equal(stored, source.h[1].attn.c_attn.weight.detach().half().numpy())


def _conversations(seed: int, turns: int, count: int) -> list[list[tuple[str, str]]]:
    """Random conversations of `turns` user turns, with the texts that stress the formats (runs of newlines,
    leading and trailing newlines, tags inside content, empty strings, non-Latin text) and system prompts."""
    rng = random.Random(seed)
    texts = ["Hello", "a\n\n\nb", "\n", "  spaced  ", "", "多语言\n\n", "x" + "\n" * 9 + "y", "<|user|>", "\n\nlead",
             "Translate this sentence.\nBeijing is the capital of China."]  # fmt: skip
    conversations = []
    for _ in range(count):
        messages = [("system", rng.choice(texts))] if rng.random() < 0.4 else []
        for turn in range(turns):
            messages += [("user", rng.choice(texts) + rng.choice(texts)) for _ in range(rng.randint(1, 2))]
            if turn < turns - 1:
                messages.append(("assistant", rng.choice(texts)))
        if rng.random() < 0.2:
            messages.insert(rng.randint(0, len(messages)), ("system", rng.choice(texts)))
        conversations.append(messages)
    return conversations


def test_llama_cpp_chat_templates_equal_polylm_formats(small_model, tmp_path):
    """The templates llama.cpp reads from the file, rendered as llama-cpp-python renders them for its chat
    endpoint, equal `render_messages` byte for byte, for 1-, 2- and 3-turn conversations in every format."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    out = tmp_path / "model.gguf"
    assert main(["export", str(small_model), "--out", str(out), "--outtype", "f32"]) == 0
    metadata = run(out, texts=["x"]).metadata
    assert metadata["tokenizer.chat_template"] == metadata["tokenizer.chat_template.multialpaca"]
    for template in TEMPLATES:
        formatter = Jinja2ChatFormatter(metadata[f"tokenizer.chat_template.{template}"], eos_token="</s>",
                                        bos_token="<s>")  # fmt: skip
        for turns in (1, 2, 3):
            for messages in _conversations(seed=turns, turns=turns, count=300):
                rendered = formatter(messages=[{"role": r, "content": c} for r, c in messages]).prompt
                assert rendered == render_messages(template, messages), (template, messages)


@pytest.mark.slow
def test_llama_cpp_runs_the_f32_export_and_agrees(tmp_path, corpus_tokenizer):
    """A PolyLM-shaped random model (tied, 256,000 rows for a 2,000-piece tokenizer, so padded): llama.cpp's last
    logits within 1e-3 of polylm's (relative to their range) on 32 held-out prompts, and greedy 64-token
    continuations identical on at least 30 of them (the others reported with their top-1/top-2 gap). The q8_0 and
    q4_k_m files' agreement is printed."""
    model_dir = save_model(build_model(POLYLM_SHAPED, seed=0), tmp_path / "model", tokenizer=corpus_tokenizer)
    out = tmp_path / "model.f32.gguf"
    assert main(["export", str(model_dir), "--out", str(out), "--outtype", "f32"]) == 0
    lines = [line for lang in languages() for line in held_out_lines(lang)][:32]
    prompts = [corpus_tokenizer.encode(line)[:40] for line in lines]
    llama = run(out, prompts, new_tokens=64)
    model = load_model(model_dir)
    with torch.inference_mode():
        ours = [model(torch.tensor([p]))[0, -1].double().numpy() for p in prompts]
    differences = [float(np.abs(t - o).max() / (o.max() - o.min())) for t, o in zip(llama.logits, ours, strict=True)]
    greedy = [row[0].token_ids for row in generate(model, prompts, GenerationConfig(max_new_tokens=64,
                                                                                    eos_token_id=None))]  # fmt: skip
    different = []
    for index, (mine, theirs) in enumerate(zip(greedy, llama.tokens, strict=True)):
        if mine != theirs:
            step = next(i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b)
            with torch.inference_mode():
                logits = model(torch.tensor([prompts[index] + mine[:step]]))[0, -1]
            top = logits.topk(2).values
            different.append({"prompt": index, "step": step, "top1_top2_gap": float(top[0] - top[1])})
    print(f"max logit difference {max(differences):.2e} of the range; greedy differs on {different}")
    assert max(differences) < 1e-3
    assert len(different) <= 2, different
    for outtype in ("q8_0", "q4_k_m"):  # reported, not required: quantized weights change some continuations
        quantized = tmp_path / f"model.{outtype}.gguf"
        assert main(["export", str(model_dir), "--out", str(quantized), "--outtype", outtype]) == 0
        tokens = run(quantized, prompts, new_tokens=64).tokens
        same = sum(mine == theirs for mine, theirs in zip(greedy, tokens, strict=True))
        print(f"{outtype}: greedy 64-token continuations equal to polylm fp32 on {same}/{len(prompts)} prompts")


def _leipzig_lines() -> list[str]:
    lines = []
    for path in sorted((SHARED_DATA / "corpora" / "leipzig_sentences").glob("??.txt")):  # the 18 languages
        lines += [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    return lines


needs_leipzig = pytest.mark.skipif(
    not (SHARED_DATA / "corpora").is_dir(), reason="needs ../shared/data/corpora/leipzig_sentences"
)


@pytest.mark.slow
@needs_leipzig
def test_llama_cpp_tokenizes_leipzig_like_sentencepiece(trained_tiny):
    """Every line of the 18 Leipzig files: llama.cpp's ids on the exported file equal sentencepiece's (the tiny
    recipe's tokenizer: BPE, identity normalizer, polylm's defaults)."""
    from polylm.tokenizer import Tokenizer

    model_dir, _ = trained_tiny
    out = model_dir.parent / "tokenizer-check.gguf"
    assert main(["export", str(model_dir), "--out", str(out), "--outtype", "f16"]) == 0
    tokenizer = Tokenizer.from_dir(model_dir)
    lines = _leipzig_lines()
    theirs = run(out, texts=lines).tokenized
    differing = [line for line, ids in zip(lines, theirs, strict=True) if ids != tokenizer.encode(line)]
    assert len(lines) > 17000 and not differing, differing[:5]


@pytest.mark.slow
@needs_leipzig
def test_unigram_tokenizers_differ_only_where_explained(tmp_path):
    """A unigram tokenizer goes to llama.cpp's unigram (UGM) tokenizer. Its lines differ from sentencepiece only
    where sentencepiece used byte fallback (UGM has none: such characters become <unk>) or where two segmentations
    score exactly the same (the two break the tie differently)."""
    from polylm.tokenizer import TokenizerTrainingConfig, train_tokenizer

    leipzig = sorted((SHARED_DATA / "corpora" / "leipzig_sentences").glob("??.txt"))
    settings = TokenizerTrainingConfig(vocab_size=8000, model_type="unigram")
    tokenizer = train_tokenizer(leipzig, tmp_path / "tok", settings)
    config = ModelConfig(name="unigram", vocab_size=tokenizer.vocab_size, max_position_embeddings=64, hidden_size=64,
                         num_layers=1, num_heads=2)  # fmt: skip
    model_dir = save_model(build_model(config), tmp_path / "model", tokenizer=tokenizer)
    out = tmp_path / "unigram.gguf"
    assert main(["export", str(model_dir), "--out", str(out), "--outtype", "f16"]) == 0
    lines = _leipzig_lines()
    classes = {"byte fallback": 0, "tie": 0}
    for line, theirs in zip(lines, run(out, texts=lines).tokenized, strict=True):
        ours = tokenizer.encode(line)
        if theirs == ours:
            continue
        if any(tokenizer.sp.is_byte(i) for i in ours) and tokenizer.unk_id in theirs:
            classes["byte fallback"] += 1
            continue
        scores = [sum(tokenizer.sp.get_score(i) for i in ids) for ids in (ours, theirs)]
        assert scores[0] == pytest.approx(scores[1], abs=1e-4), (line, ours, theirs)
        classes["tie"] += 1
    print(f"unigram: {len(lines)} lines, differing by class: {classes}")
    assert classes["byte fallback"] < 0.1 * len(lines) and classes["tie"] < 0.001 * len(lines)


@pytest.mark.parametrize(
    ("change", "args", "message"),
    [
        (None, ["--out", "{tmp}/missing/model.gguf"], "does not exist"),
        (None, ["--out", "{tmp}/model.gguf", "--outtype", "q3_k"], "--outtype 'q3_k' is not one of"),
        ("vocab", ["--out", "{tmp}/model.gguf"], "tokenizer has 2000 pieces but the embedding has only"),
        ("gelu", ["--out", "{tmp}/model.gguf"], "exact GELU"),
    ],
)
def test_bad_input_is_one_line(small_model, tmp_path, capsys, change, args, message):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for path in small_model.iterdir():
        (model_dir / path.name).write_bytes(path.read_bytes())
    config = json.loads((model_dir / "config.json").read_text())
    if change == "vocab":
        config["vocab_size"] = 1999
    if change == "gelu":
        config["activation_function"] = "gelu"
    (model_dir / "config.json").write_text(json.dumps(config))
    code = main(["export", str(model_dir), *[a.format(tmp=tmp_path) for a in args]])
    stderr = capsys.readouterr().err
    assert code == 1 and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
    assert not list(tmp_path.glob("model.gguf*"))
