"""Text-level generation: PolyLM's prompt formats, stop strings, streaming, the pipeline and the CLI verbs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import TINY, random_model
from polylm import pipeline
from polylm.cli import main
from polylm.errors import PolyLMError
from polylm.generate import GenerationConfig, TextGenerator, generate
from polylm.hf_checkpoint import save_model
from polylm.templates import render_prompt


def test_multialpaca_template():
    assert render_prompt("multialpaca", "Hola\n\n\nmundo") == "Hola\nmundo\n\n"
    history = [("q1", "r1"), ("q2\n\nmore", "r2")]
    assert render_prompt("multialpaca", "q3", history) == "q1\n\nr1\nq2\nmore\n\nr2\nq3\n\n"


def test_chat_template():
    assert render_prompt("chat", "Hi") == "<|user|>\nHi\n<|assistant|>\n"
    assert render_prompt("chat", "And?", [("Hi", "Hello")]) == (
        "<|user|>\nHi\n<|assistant|>\nHello\n<|user|>\nAnd?\n<|assistant|>\n"
    )


def test_plain_template_and_unknown_template():
    assert render_prompt("plain", "x\n\ny") == "x\n\ny"
    with pytest.raises(PolyLMError, match="unknown template 'alpaca' \\(--template\\); choose one of plain"):
        render_prompt("alpaca", "x")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, corpus_tokenizer):
    out = tmp_path_factory.mktemp("textgen")
    save_model(random_model(TINY.replace(vocab_size=corpus_tokenizer.vocab_size), seed=2), out, corpus_tokenizer)
    return out


@pytest.fixture(scope="module")
def generator(model_dir, corpus_tokenizer):
    from polylm.hf_checkpoint import load_model

    return TextGenerator(load_model(model_dir), corpus_tokenizer, "multialpaca")


def test_text_generator_uses_the_template(generator, corpus_tokenizer):
    config = GenerationConfig(max_new_tokens=6, eos_token_id=None)
    result = generator(["Bonjour"], config)[0][0]
    prompt = corpus_tokenizer.encode("Bonjour\n\n")
    assert result.token_ids == generate(generator.model, [prompt], config)[0][0].token_ids
    assert result.text == corpus_tokenizer.decode(result.token_ids)


def test_stop_strings_cut_the_text(generator):
    free = generator(["The river"], GenerationConfig(max_new_tokens=20, eos_token_id=None))[0][0]
    assert len(free.text) > 4
    stop = free.text[2:4]
    stopped = generator(["The river"], GenerationConfig(max_new_tokens=20, eos_token_id=None, stop=[stop]))[0][0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)]
    assert len(stopped.token_ids) < len(free.token_ids)


@pytest.mark.parametrize("options", [{}, {"do_sample": True, "seed": 3}, {"num_beams": 3}])
def test_stream_pieces_add_up_to_the_full_text(generator, options):
    config = GenerationConfig(max_new_tokens=12, eos_token_id=None, **options)
    pieces = list(generator.stream("Le marché", config))
    assert "".join(pieces) == generator(["Le marché"], config)[0][0].text
    if not options.get("num_beams"):
        assert len(pieces) > 1  # really incremental


def test_stream_never_shows_a_stop_string(generator):
    free = generator(["The river"], GenerationConfig(max_new_tokens=20, eos_token_id=None))[0][0].text
    stop = free[3:6]
    config = GenerationConfig(max_new_tokens=20, eos_token_id=None, stop=[stop])
    assert "".join(generator.stream("The river", config)) == free[: free.find(stop)]


def test_pipeline_accepts_the_model_card_kwargs(model_dir):
    p = pipeline("text-generation", model=str(model_dir))
    kwargs = dict(do_sample=False, num_beams=4, max_new_tokens=16, early_stopping=True, eos_token_id=2)
    out = p("Beijing is the capital of China.\nTranslate this sentence from English to Chinese.", **kwargs)
    assert isinstance(out["text"], str)
    assert p(["a", "b"], max_new_tokens=3) == [p("a", max_new_tokens=3), p("b", max_new_tokens=3)]
    with pytest.raises(PolyLMError, match="unknown generation option 'num_beam'"):
        p("x", num_beam=4)
    with pytest.raises(PolyLMError, match="unsupported pipeline task"):
        pipeline("translation", model=str(model_dir))


def test_cli_generate_beam_json_equals_library(model_dir, generator, capsys):
    argv = [
        "generate",
        "--model",
        str(model_dir),
        "--prompt",
        "Hello",
        "--num-beams",
        "4",
        "--early-stopping",
        "true",
        "--max-new-tokens",
        "10",
        "--template",
        "multialpaca",
        "--json",
    ]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    config = GenerationConfig(num_beams=4, early_stopping=True, max_new_tokens=10)
    expected = generator(["Hello"], config)[0][0]
    assert record["prompt"] == "Hello"
    assert record["token_ids"] == expected.token_ids and record["text"] == expected.text


def test_cli_generate_streams_plain_text(model_dir, generator, capsys):
    assert (
        main(
            [
                "generate",
                "--model",
                str(model_dir),
                "--prompt",
                "Hello",
                "--max-new-tokens",
                "8",
                "--template",
                "multialpaca",
                "--do-sample",
                "--seed",
                "5",
                "--top-p",
                "0.9",
            ]
        )
        == 0
    )
    expected = generator(["Hello"], GenerationConfig(max_new_tokens=8, do_sample=True, seed=5, top_p=0.9))[0][0]
    assert capsys.readouterr().out == expected.text + "\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-beams", "0"], "'num_beams' (--num-beams) must be at least 1"),
        (["--top-p", "1.5"], "'top_p' (--top-p) must be in (0, 1]"),
        (["--do-sample", "--temperature", "0"], "'temperature' (--temperature) must be > 0 when sampling"),
    ],
)
def test_cli_bad_options_are_one_line(model_dir, capsys, flags, message):
    assert main(["generate", "--model", str(model_dir), "--prompt", "x", *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("polylm: error: generation option") and message in err and "\n" not in err


def test_cli_unknown_template_names_the_option(model_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(model_dir), "--prompt", "x", "--template", "alpaca"])
    assert exit_info.value.code == 2
    assert "argument --template: invalid choice: 'alpaca'" in capsys.readouterr().err


def test_cli_prompt_file_jsonl_allows_newlines(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "line one\nline two"}) + "\n" + json.dumps("second") + "\n")
    assert (
        main(["generate", "--model", str(model_dir), "--prompt-file", str(prompts), "--max-new-tokens", "3", "--json"])
        == 0
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in records] == ["line one\nline two", "second"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt key"}\n')
    assert main(["generate", "--model", str(model_dir), "--prompt-file", str(bad)]) == 1
    assert 'line 1 is not a JSON string or an object with a "prompt" key' in capsys.readouterr().err


def test_chat_session_streams_clears_and_stops(model_dir, generator):
    """A real `polylm chat` process driven through stdin: two rounds, clear, a third round, stop."""
    config = GenerationConfig(max_new_tokens=6, repetition_penalty=1.02)  # the chat's default penalty
    first = generator(["Hi"], config)[0][0].text
    second = generator(["More"], config, history=[("Hi", first)])[0][0].text
    third_after_clear = generator(["More"], config)[0][0].text
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "polylm.cli",
            "chat",
            "--model",
            str(model_dir),
            "--multi-round",
            "--no-do-sample",
            "--max-new-tokens",
            "6",
        ],
        input="Hi\nMore\nclear\nMore\nstop\nnever read\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answers = [segment.split("\n")[0] for segment in result.stdout.split("PolyLM: ")[1:]]
    assert answers == [first, second, third_after_clear]  # nothing after "stop" was answered
    assert "(conversation cleared)" in result.stderr


CARD_PROMPT = "Beijing is the capital of China.\nTranslate this sentence from English to Chinese."


@pytest.mark.parametrize("prompt", [CARD_PROMPT, render_prompt("chat", "Wo liegt Lissabon?")])
def test_pipeline_text_equals_modelscopes_polylm_pipeline(model_dir, corpus_tokenizer, prompt):
    """ModelScope's PolyLM pipeline, step by step with transformers: the slow tokenizer with legacy=False,
    `generate(**card_kwargs)`, then `decode(outputs[0], skip_special_tokens=True)`: prompt and completion.

    The decode of the card's time (transformers 4.31's LlamaTokenizer) is sentencepiece's own decoding of the
    tokens; transformers 5 decodes byte-fallback tokens that are not valid UTF-8 differently (the random model's
    chat continuation starts with a lone byte, and transformers 5 turns the prompt's last three bytes into
    replacement characters too), so the reference is sentencepiece's decode of transformers' tokens, and it must
    equal transformers 5's decode wherever the text is valid UTF-8."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, legacy=False, use_fast=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    kwargs = dict(do_sample=False, num_beams=4, max_new_tokens=16, early_stopping=True, eos_token_id=2)
    inputs = tokenizer(prompt, return_tensors="pt")
    outputs = model.generate(inputs.input_ids, attention_mask=inputs.attention_mask, **kwargs)[0].tolist()
    special = set(tokenizer.all_special_ids)

    def decoded(ids: list[int]) -> str:
        text = corpus_tokenizer.sp.decode_pieces(tokenizer.convert_ids_to_tokens([i for i in ids if i not in special]))
        if "\ufffd" not in text:
            assert tokenizer.decode(ids, skip_special_tokens=True) == text
        return text

    expected, completion = decoded(outputs), decoded(outputs[inputs.input_ids.shape[1] :])
    p = pipeline("text-generation", model=str(model_dir))
    assert p(prompt, **kwargs) == {"text": expected}
    assert p([prompt, "Olá"], **kwargs)[0] == {"text": expected}
    assert p(prompt, return_full_text=False, **kwargs) == {"text": completion}
    assert expected.startswith(prompt.rstrip("\n")) and len(expected) > len(prompt)
