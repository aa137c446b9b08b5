"""Instruction tuning: response-only labels, packing, tuning on MultiAlpaca, the chat prompt, LoRA merge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, TINY, random_model
from polylm.cli import main
from polylm.generate.text import TextGenerator
from polylm.hf_checkpoint import load_model, save_model
from polylm.instruct.records import Conversation, Message
from polylm.instruct.sft import encode, pack
from polylm.loss import IGNORE_INDEX
from polylm.templates import render_prompt
from polylm.tokenizer import Tokenizer
from polylm.train.checkpointing import list_checkpoints
from train_support import losses, torchrun

MULTIALPACA = SHARED_DATA / "instructions" / "multialpaca"

SINGLE = Conversation(
    (Message("user", "Traduce al inglés:\nLa casa es grande."), Message("assistant", "The house is big.")), "es", "t"
)
MULTI = Conversation(
    (
        Message("system", "Eres un asistente."),
        Message("user", "¿Capital de Francia?"),
        Message("assistant", "París."),
        Message("user", "¿Y de Japón?\n\n¿Y de Tailandia?"),
        Message("assistant", "Tokio.\nBangkok."),
        Message("user", "ありがとう"),
        Message("assistant", "どういたしまして。"),
    ),
    "es",
    "t",
)


def _runs(labels: list[int]) -> list[tuple[bool, int, int]]:
    """Maximal runs of labelled / unlabelled positions: (labelled, start, end)."""
    out, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or (labels[i] == IGNORE_INDEX) != (labels[start] == IGNORE_INDEX):
            out.append((labels[start] != IGNORE_INDEX, start, i))
            start = i
    return out


@pytest.mark.parametrize("template", ["multialpaca", "chat"])
@pytest.mark.parametrize("conversation", [SINGLE, MULTI], ids=["single", "multi"])
def test_labels_are_the_responses_and_nothing_else(corpus_tokenizer, template, conversation):
    example = encode(corpus_tokenizer, template, conversation)
    responses = [m.content for m in conversation.messages if m.role == "assistant"]
    runs = _runs(example.labels)
    assert [labelled for labelled, _, _ in runs] == [False, True] * len(responses)
    for (_, start, end), response in zip(runs[1::2], responses, strict=True):
        assert example.labels[start:end] == example.ids[start:end]
        assert example.ids[end - 1] == corpus_tokenizer.eos_id
        assert corpus_tokenizer.decode(example.ids[start : end - 1]) == response
    # The first prompt is exactly what `polylm chat --template T` sends for that query.
    first_query = "Eres un asistente.\n¿Capital de Francia?" if conversation is MULTI else SINGLE.messages[0].content
    prompt_ids = TextGenerator(random_model(TINY.replace(vocab_size=2000)), corpus_tokenizer, template).prompt_ids(
        first_query
    )
    assert example.ids[: runs[0][2]] == prompt_ids == corpus_tokenizer.encode(render_prompt(template, first_query))


def test_multialpaca_single_turn_text_is_the_documented_format(corpus_tokenizer):
    """`{instruction}\\n{input}\\n\\n{output}</s>`, written out here without the template code."""
    example = encode(corpus_tokenizer, "multialpaca", SINGLE)
    assert example.ids[-1] == corpus_tokenizer.eos_id
    assert corpus_tokenizer.decode(example.ids[:-1]) == "Traduce al inglés:\nLa casa es grande.\n\nThe house is big."


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_packed_and_padded_sequences_keep_every_label(corpus_tokenizer, packing):
    examples = [encode(corpus_tokenizer, t, c) for t in ("multialpaca", "chat") for c in (SINGLE, MULTI, SINGLE)]
    length = 160
    sequences = pack(examples, length, packing, pad_id=corpus_tokenizer.eos_id)
    rebuilt = []
    for sequence in sequences:
        for number in range(sequence.segments.max() + 1):
            where = np.flatnonzero(sequence.segments == number)
            assert (where == np.arange(where[0], where[-1] + 1)).all()
            assert (sequence.positions[where] == np.arange(len(where))).all()
            rebuilt.append((sequence.tokens[where].tolist(), sequence.labels[where].tolist()))
        assert (sequence.labels[sequence.segments == -1] == IGNORE_INDEX).all()
    assert rebuilt == [(e.ids, e.labels) for e in examples]
    assert len(sequences) < len(examples) if packing else len(sequences) == len(examples)


def test_packed_examples_do_not_see_each_other(corpus_tokenizer):
    """Per-token losses of a packed sequence equal each example's own, so attention and positions restart."""
    model = random_model(TINY.replace(vocab_size=2000, max_position_embeddings=256))
    examples = [encode(corpus_tokenizer, "chat", c) for c in (MULTI, SINGLE)]
    (sequence,) = pack(examples, 200, True, pad_id=corpus_tokenizer.eos_id)
    tokens, labels = torch.from_numpy(sequence.tokens), torch.from_numpy(sequence.labels)
    with torch.no_grad():
        _, packed = model(tokens[None, :-1], targets=labels[None, 1:],
                          position_ids=torch.from_numpy(sequence.positions[None, :-1]),
                          segment_ids=torch.from_numpy(sequence.segments[None, :-1]))  # fmt: skip
        start = 0
        for example in examples:
            ids, targets = torch.tensor([example.ids]), torch.tensor([example.labels])
            _, alone = model(ids[:, :-1], targets=targets[:, 1:])
            end = start + len(example.ids) - 1
            assert (packed[0, start:end] - alone[0]).abs().max() < 1e-5
            start = end + 1


def _tiny_model_dir(tmp_path, tokenizer):
    model = random_model(TINY.replace(vocab_size=tokenizer.vocab_size, max_position_embeddings=256), seed=3)
    return save_model(model, tmp_path / "base", tokenizer=tokenizer)


def _finetune_config(tmp_path, model_dir, data_dir, **extra) -> str:
    sections = {
        "model": {"path": str(model_dir)},
        "data": str(data_dir),
        "sft": {"template": "multialpaca", "seq_len": 256, "packing": True, "epochs": 3},
        "batch": {"global_tokens": 4096, "micro_batch": 8},
        "optim": {"lr": 3e-3, "warmup_steps": 5},
        "run": {"max_steps": 40, "checkpoint_every": 20, "eval_every": 20, "eval_tokens": 3000},
        **extra,
    }
    path = tmp_path / "finetune.yaml"
    path.write_text(json.dumps(sections))  # JSON is YAML
    return str(path)


@pytest.fixture(scope="module")
def multialpaca_dir(tmp_path_factory):
    if not MULTIALPACA.is_dir():
        pytest.skip(f"real MultiAlpaca data not found at {MULTIALPACA}")
    root = tmp_path_factory.mktemp("multialpaca")
    sources = ",".join(
        f'{{name: {lang}, format: alpaca, max_records: 600, paths: [{{path: "{MULTIALPACA / (lang + ".jsonl")}", '
        f"lang: {lang}}}]}}"
        for lang in ("es", "ja", "pt")
    )
    (root / "mix.yaml").write_text(f"sources: [{sources}]\nvalidation_fraction: 0.1\nlanguage_id: false\n")
    assert main(["instruct", "prepare", "--config", str(root / "mix.yaml"), "--out", str(root / "data")]) == 0
    return root / "data"


@pytest.mark.slow
def test_finetuning_on_multialpaca_lowers_response_loss_per_language(tmp_path, corpus_tokenizer, multialpaca_dir):
    model_dir = _tiny_model_dir(tmp_path, corpus_tokenizer)
    run = tmp_path / "run"
    config = _finetune_config(tmp_path, model_dir, multialpaca_dir)
    assert main(["finetune", "--config", config, "--out", str(run)]) == 0
    validation = [json.loads(line) for line in (run / "validation.jsonl").read_text().splitlines()]
    before, after = validation[0]["loss_by_lang"], validation[-1]["loss_by_lang"]
    assert set(before) == {"es", "ja", "pt"}
    for lang in before:
        assert after[lang] < before[lang] - 0.5, (lang, before[lang], after[lang])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "val_response_loss" in records[-1] and records[-1]["val_response_loss_by_lang"] == after
    # The tuned model chats with the very prompt bytes it was trained on.
    out = tmp_path / "tuned"
    assert main(["export", str(list_checkpoints(run)[-1]), "--out", str(out)]) == 0
    query = "Escribe una oración."
    pair = Conversation((Message("user", query), Message("assistant", "Hola.")), "es", "t")
    trained = encode(corpus_tokenizer, "multialpaca", pair)
    chat_ids = TextGenerator(load_model(out), Tokenizer.from_dir(out), "multialpaca").prompt_ids(query)
    assert trained.ids[: len(chat_ids)] == chat_ids and trained.labels[len(chat_ids) - 1] == IGNORE_INDEX


@pytest.mark.slow
def test_fsdp_finetune_reads_each_ranks_rows_and_equals_one_process(tmp_path, corpus_tokenizer, multialpaca_dir):
    """Under FSDP the model of model.path is built on the meta device and sharded, then each rank reads only its
    rows of the stored tensors: the losses are one process's."""
    model_dir = _tiny_model_dir(tmp_path, corpus_tokenizer)
    run = {"max_steps": 4, "checkpoint_every": 4, "eval_tokens": 1000}
    config = _finetune_config(tmp_path, model_dir, multialpaca_dir, run=run)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["finetune", "--config", config, "--out", str(one)]) == 0
    result = torchrun("finetune", "--config", config, "--out", str(two), "parallel.engine=fsdp")
    assert result.returncode == 0, result.stderr[-2000:]
    first = json.loads((two / "metrics.jsonl").read_text().splitlines()[0])
    assert first["world_size"] == 2 and first["startup_peak_rss_gib"] > 0
    gaps = [abs(a - b) for a, b in zip(losses(one), losses(two), strict=True)]
    assert len(gaps) == 4 and max(gaps) <= 1e-5, gaps


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # the direct dcp.load below
def test_lora_merge_equals_base_plus_adapter(tmp_path, corpus_tokenizer, multialpaca_dir):
    from polylm.train.checkpointing import read_trainer_state
    from polylm.train.config import LoraSection
    from polylm.train.lora import add_lora

    model_dir = _tiny_model_dir(tmp_path, corpus_tokenizer)
    run = tmp_path / "run"
    config = _finetune_config(tmp_path, model_dir, multialpaca_dir, lora={"enabled": True, "r": 4})
    assert main(["finetune", "--config", config, "--out", str(run), "--max-steps", "6", "run.eval_every=0"]) == 0
    checkpoint = list_checkpoints(run)[-1]
    assert main(["export", str(checkpoint), "--out", str(tmp_path / "merged")]) == 0
    # The unmerged model: base weights + adapters loaded from the checkpoint, in peft's own forward.
    import torch.distributed.checkpoint as dcp

    state = read_trainer_state(checkpoint)
    adapted = add_lora(load_model(model_dir, dtype=torch.float32), LoraSection(**state["lora"])).eval()
    weights = {"model": adapted.state_dict()}
    dcp.load(weights, checkpoint_id=checkpoint / "weights", no_dist=True)
    adapted.load_state_dict(weights["model"])
    base = load_model(model_dir, dtype=torch.float32)
    merged = load_model(tmp_path / "merged", dtype=torch.float32)
    ids = torch.randint(3, corpus_tokenizer.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got, untouched = adapted(ids), merged(ids), base(ids)
    assert (got - expected).abs().max() < 1e-5
    assert (got - untouched).abs().max() > 1e-4  # the adapters did change the model
    frozen = {k for k, v in base.state_dict().items() if "c_attn" not in k}
    for key in frozen:
        assert torch.equal(merged.state_dict()[key], base.state_dict()[key]), key


def test_the_example_config_reads():
    from conftest import REPO
    from polylm.train.config import FinetuneConfig, load_train_config

    config = load_train_config(REPO / "examples" / "finetune" / "multialpaca-tiny.yaml", kind=FinetuneConfig)
    assert config.sft.template == "multialpaca" and config.model.path.endswith("runs/tiny-hf")
    assert config.batch.global_tokens % (config.sft.seq_len * config.batch.micro_batch) == 0


@pytest.mark.parametrize("on_meta", [False, True], ids=["whole", "on_meta"])
def test_a_quantized_model_path_is_refused_in_one_line(tmp_path, corpus_tokenizer, on_meta):
    from polylm.errors import PolyLMError
    from polylm.quantize.convert import quantize_model
    from polylm.train.config import FinetuneConfig
    from polylm.train.distributed import World
    from polylm.train.trainer import _build_model

    quantized = tmp_path / "int8"
    quantize_model(_tiny_model_dir(tmp_path, corpus_tokenizer), quantized, bits=8)
    config = FinetuneConfig(data="d")
    config.model.path = str(quantized)
    with pytest.raises(PolyLMError, match=r"int8: a model written by `polylm quantize` is for inference"):
        _build_model(config, corpus_tokenizer, 64, World(), on_meta)
