"""Each decoding option is declared once, in GenerationConfig: `polylm generate` and `chat` take every field as a
flag (its docstring is the help), the server's request schema carries every field (under OpenAI's name where it
has one) and `pipeline(...)` takes every field as a keyword; `polylm --help` imports no torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from polylm.cli import build_parser
from polylm.configfile import field_docs
from polylm.generate.config import GenerationConfig
from polylm.serve.protocol import ChatCompletionRequest, CompletionRequest

FIELDS = [f.name for f in dataclasses.fields(GenerationConfig)]

# A value other than the default for every field, valid alone.
SAMPLE = {
    "max_new_tokens": 7,
    "max_length": 33,
    "do_sample": True,
    "temperature": 0.5,
    "top_k": 3,
    "top_p": 0.5,
    "repetition_penalty": 1.5,
    "no_repeat_ngram_size": 2,
    "num_beams": 3,
    "length_penalty": 0.5,
    "early_stopping": "never",
    "num_return_sequences": 2,
    "eos_token_id": [2, 5],
    "pad_token_id": 1,
    "stop": ["\n"],
    "seed": 9,
}
FLAGS = {"eos_token_id": ["2", "5"], "stop": ["\n"], "do_sample": []}
COMPANIONS = {"num_return_sequences": {"do_sample": True}}  # more than one sequence needs sampling (or beams)

# field -> (request fields that set it, the value it must then have)
SERVER = {
    "max_new_tokens": ({"max_tokens": 7}, 7),
    "do_sample": ({"temperature": 0.5}, True),
    "temperature": ({"temperature": 0.5}, 0.5),
    "top_k": ({"temperature": 0.5, "top_k": 3}, 3),
    "top_p": ({"top_p": 0.5}, 0.5),
    "repetition_penalty": ({"repetition_penalty": 1.5}, 1.5),
    "no_repeat_ngram_size": ({"no_repeat_ngram_size": 2}, 2),
    "num_beams": ({"num_beams": 3}, 3),
    "length_penalty": ({"num_beams": 3, "length_penalty": 0.5}, 0.5),
    "early_stopping": ({"num_beams": 3, "early_stopping": "never"}, "never"),
    "num_return_sequences": ({"num_beams": 3, "n": 2}, 2),
    "eos_token_id": ({"ignore_eos": True}, None),
    "stop": ({"stop": ["\n"]}, ["\n"]),
    "seed": ({"seed": 9}, 9),
}
NOT_IN_THE_SERVER = {
    "max_length": "transformers' older limit: the API's one length limit is max_tokens (max_new_tokens)",
    "pad_token_id": "how rows are padded inside a batch is the server's business, not the request's",
}


def test_every_field_has_a_docstring_and_is_covered_here():
    assert set(field_docs(GenerationConfig)) == set(FIELDS)
    assert set(SAMPLE) == set(FIELDS)
    assert set(SERVER) | set(NOT_IN_THE_SERVER) == set(FIELDS) and not set(SERVER) & set(NOT_IN_THE_SERVER)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("verb", ["generate", "chat"])
def test_every_field_is_a_flag(verb, field):
    from polylm.cli.generate import _generation_config

    flag = "--" + field.replace("_", "-")
    values = FLAGS.get(field, [str(SAMPLE[field])])
    extra = ["--do-sample"] if field in COMPANIONS else []
    prompt = ["--prompt", "p"] if verb == "generate" else []
    args = build_parser().parse_args([verb, "--model", "m", *prompt, flag, *values, *extra])
    assert getattr(_generation_config(args), field) == SAMPLE[field]


def test_generate_help_shows_each_docstring():
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["generate"].format_help().split())
    for field, doc in field_docs(GenerationConfig).items():
        assert "--" + field.replace("_", "-") in text
        assert " ".join(doc.split()[:6]) in text, field


@pytest.mark.parametrize("field", sorted(SERVER))
@pytest.mark.parametrize("request_type", [CompletionRequest, ChatCompletionRequest])
def test_every_field_is_in_the_request_schema(request_type, field):
    body, expected = SERVER[field]
    properties = request_type.model_json_schema()["properties"]
    assert set(body) <= set(properties)
    base = {"prompt": "a"} if request_type is CompletionRequest else {"messages": [{"role": "user", "content": "a"}]}
    config, _ = request_type.model_validate({**base, **body}).generation_config(max_new_tokens=7, eos_token_id=2)
    assert getattr(config, field) == expected


@pytest.mark.parametrize("field", FIELDS)
def test_every_field_is_a_pipeline_keyword(field):
    from polylm.pipelines import TextGenerationPipeline

    class Recorder:
        def __call__(self, queries, config):
            raise _Seen(config)

    with pytest.raises(_Seen) as seen:
        TextGenerationPipeline(Recorder(), GenerationConfig())(
            "a", **{field: SAMPLE[field], **COMPANIONS.get(field, {})}
        )
    assert getattr(seen.value.config, field) == SAMPLE[field]


class _Seen(Exception):
    def __init__(self, config: GenerationConfig) -> None:
        self.config = config


def test_polylm_help_imports_no_torch():
    code = "import sys; from polylm.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
    code += "print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize(("verb", "config"), [("pretrain", "TrainConfig"), ("finetune", "FinetuneConfig")])
def test_run_help_lists_every_config_key_with_its_docstring(verb, config):
    """The dotted overrides are the config's keys: each has a docstring, and `--help` shows it, so a new key is one
    edit in polylm.train.config; each is also accepted as `dotted.key=value`."""
    from polylm.configfile import config_keys
    from polylm.train import config as train_config

    kind = getattr(train_config, config)
    text = " ".join(build_parser()._subparsers._group_actions[0].choices[verb].format_help().split())
    keys = list(config_keys(kind))
    assert {"optim.lr", "run.max_steps", "parallel.engine", "model.overrides"} <= {key for key, *_ in keys}
    assert (verb == "finetune") == any(key.startswith(("lora.", "sft.")) for key, *_ in keys)
    for key, _, default, doc in keys:
        assert doc, f"{key} has no docstring"
        assert f"{key}: " in text and doc in text, key
        override = [f"{key}={json.dumps(default)}", "data=d"] + (["model.path=m"] if verb == "finetune" else [])
        assert train_config.load_train_config(None, override, kind), key
