"""Instruction data: each public format's loader, malformed and rejected records, the mixture's filters, caps and
split, and `polylm instruct prepare|stats` (on the real MultiAlpaca files when ../shared/data has them)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SHARED_DATA
from polylm.cli import main
from polylm.errors import PolyLMError
from polylm.instruct.formats import Entry
from polylm.instruct.loaders import read_entries
from polylm.instruct.mixture import load_config
from polylm.instruct.prepare import LengthFilter, prepare, read_split
from polylm.instruct.records import Conversation, Message
from polylm.instruct.sft import encode

FIXTURES = REPO / "tests" / "fixtures" / "instruct"
MULTIALPACA = SHARED_DATA / "instructions" / "multialpaca"


def turns(*texts: str, system: str | None = None) -> tuple[Message, ...]:
    """user, assistant, user, ... messages."""
    roles = ("user", "assistant")
    messages = tuple(Message(roles[i % 2], text) for i, text in enumerate(texts))
    return ((Message("system", system),) if system else ()) + messages


FRANCE = ("What is the capital of France?", "The capital of France is Paris.")
ITALY = ("What is the capital of France?", "Paris.", "And of Italy?", "Rome.")
REJECTED_ITALY = (*ITALY[:3], "Rome is the capital of Italy, you idiot.")
EXPECTED = {
    "alpaca.json": ("alpaca", [
        ("[0]", turns("Create an array of length 5 which contains all even numbers between 1 and 10.",
                      "arr = [2, 4, 6, 8, 10]"), "und"),
        ("[1]", turns("Write a function to add two numbers.\na = 2, b = 3", "def add(a, b):\n    return a + b"), "und"),
        ("[2]", turns("把下面的句子翻译成英文。\n今天天气很好。", "The weather is nice today."), "und"),
    ]),
    "multialpaca.jsonl": ("alpaca", [
        (":1", turns('Reescribe la oración en voz pasiva: "El perro mordió al cartero."',
                     "El cartero fue mordido por el perro."), "und"),
        (":2", turns('Completa la oración: "El vehículo necesita una revisión porque..."\n'
                     "la luz del motor está encendida.",
                     "El vehículo necesita una revisión porque la luz del motor está encendida."), "und"),
        (":4", turns("次の文を丁寧語に書き換えてください。", "明日は学校に行きます。"), "und"),
    ]),
    "dolly.jsonl": ("dolly", [
        (":1", turns("When did Virgin Australia start operating?\nVirgin Australia, the trading name of Virgin "
                     "Australia Airlines Pty Ltd, is an Australian-based airline. It commenced services on 31 "
                     "August 2000 as Virgin Blue, with two aircraft on a single route.",
                     "Virgin Australia commenced services on 31 August 2000 as Virgin Blue, with two aircraft on a "
                     "single route."), "und"),
        (":2", turns("Which is a species of fish? Tope or Rope", "Tope"), "und"),
    ]),
    "flan_v2.jsonl": ("flan_v2", [
        (":1", turns('Premise: "A man is playing a guitar on stage."\nHypothesis: "A man is performing music."\n'
                     "Does the premise entail the hypothesis?\nOPTIONS:\n- yes\n- it is not possible to tell\n- no",
                     "yes"), "und"),
        (":2", turns("Translate to German: I like apples.", "Ich mag Äpfel."), "und"),
    ]),
    "gpteacher.json": ("gpteacher", [
        ("[0]", turns("Write a Python function that reverses a string.", "def reverse(s):\n    return s[::-1]"), "und"),
        ("[1]", turns("Explain what this JavaScript code does.\nconst x = [1, 2, 3].map(n => n * 2);",
                      "It doubles every element of the array, so x is [2, 4, 6]."), "und"),
    ]),
    "share_gpt.json": ("share_gpt", [
        ("[0]", turns("Summarize the plot of Hamlet in one sentence.",
                      "Prince Hamlet seeks revenge on his uncle for murdering his father, and nearly everyone dies.",
                      "Now in French.", "Le prince Hamlet cherche à venger son père assassiné par son oncle, et "
                      "presque tout le monde meurt."), "und"),
        ("[1]", turns("¿Cuál es la capital de Perú?", "La capital de Perú es Lima.",
                      system="You are a helpful assistant."), "und"),
    ]),
    "oasst.trees.jsonl": ("open_assistant", [
        (":1 message a2", turns(*ITALY), "en"),
        (":1 message a3", turns(*REJECTED_ITALY), "en"),
        (":1 message a4", turns(*FRANCE), "en"),
        (":2 message a5", turns("Qual é a maior cidade do Brasil?", "A maior cidade do Brasil é São Paulo."), "pt"),
    ]),
    "oasst.messages.jsonl": ("open_assistant", [
        (":2", turns(*FRANCE), "en"),
        (":5", turns(*ITALY), "en"),
        (":6", turns(*REJECTED_ITALY), "en"),
    ]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_loader_reads_its_fixture(name):
    fmt, expected = EXPECTED[name]
    entries = list(read_entries(FIXTURES / name, fmt, "src"))
    assert [(e.where, e.conversation) for e in entries] == [
        (f"{FIXTURES / name}{where}", Conversation(messages, lang, "src")) for where, messages, lang in expected
    ]
    assert all(e.malformed is None for e in entries)
    assert [e.rejected for e in entries] == [
        "deleted or failed review" if "idiot" in messages[-1].content else None for _, messages, _ in expected
    ]


def test_oasst_reads_gzip_and_a_lone_prompt_is_kept_for_rejection(tmp_path):
    path = tmp_path / "t.trees.jsonl.gz"
    tree = {"message_tree_id": "t", "prompt": {"message_id": "p", "text": "Hello?", "role": "prompter", "lang": "de"}}
    path.write_bytes(gzip.compress((json.dumps(tree) + "\n").encode()))
    assert list(read_entries(path, "open_assistant", "oa")) == [
        Entry(f"{path}:1 message p", Conversation((Message("user", "Hello?"),), "de", "oa"))
    ]
    path.write_bytes(gzip.compress(b'{"prompt": {"text": "Hello?", "role": "prompter"}}\n' * 100)[:-30])
    entries = list(read_entries(path, "open_assistant", "oa"))
    assert malformed(entries) == [(str(path), "corrupt or truncated gzip stream (the rest of the file is lost)")]


def malformed(entries: list[Entry]) -> list[tuple[str, str]]:
    return [(e.where, e.malformed) for e in entries if e.malformed is not None]


def test_malformed_jsonl_records_are_entries_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        b'{"instruction": "a", "input": null, "output": "b"}',
        b'{"instruction": "a", "output": ',
        b'["not", "an", "object"]',
        b'{"instruction": "a"}',
        b'{"instruction": "a", "output": 3}',
        b'{"instruction": "a", "output": null}',
        b'{"instruction": "\xff", "output": "b"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    entries = list(read_entries(path, "alpaca", "s"))
    assert len(entries) == len(lines)
    assert malformed(entries) == [
        (f"{path}:2", "invalid JSON"),
        (f"{path}:3", "not a JSON object (got list)"),
        (f"{path}:4", "missing field 'output'"),
        (f"{path}:5", "field 'output' is int, expected a string"),
        (f"{path}:6", "field 'output' is null"),
        (f"{path}:7", "invalid UTF-8"),
    ]


def test_malformed_json_array_items_and_files(tmp_path):
    items = tmp_path / "items.json"
    items.write_text(json.dumps([
        {"id": "1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"id": "2", "conversations": "hi"},
        {"id": "3", "conversations": [{"from": "human"}]},
        "text",
    ]))  # fmt: skip
    assert malformed(list(read_entries(items, "share_gpt", "s"))) == [
        (f"{items}[1]", "field 'conversations' is not a list"),
        (f"{items}[2]", "missing field 'value'"),
        (f"{items}[3]", "not a JSON object (got str)"),
    ]
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"instruction": "a",\n   "output": }\n]\n')
    assert malformed(list(read_entries(broken, "alpaca", "s"))) == [(f"{broken}:3", "invalid JSON")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert malformed(list(read_entries(empty, "dolly", "s"))) == [(str(empty), "no records in the file")]


def test_oasst_malformed_tree_and_orphan_messages(tmp_path):
    trees = tmp_path / "t.trees.jsonl"
    bad = {
        "prompt": {
            "message_id": "p",
            "text": "Hi",
            "role": "prompter",
            "replies": [{"message_id": "a", "role": "assistant"}],
        }
    }
    trees.write_text(json.dumps(bad) + "\n")
    assert malformed(list(read_entries(trees, "open_assistant", "oa"))) == [(f"{trees}:1", "missing field 'text'")]
    flat = tmp_path / "m.messages.jsonl"
    rows = [{"message_id": "a", "parent_id": "gone", "text": "x", "role": "assistant"},
            {"message_id": "b", "parent_id": "a", "text": "y", "role": "prompter"}]  # fmt: skip
    flat.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert malformed(list(read_entries(flat, "open_assistant", "oa"))) == [
        (f"{flat}:1", "parent message not in the file"),
        (f"{flat}:2", "parent message not in the file"),
    ]


def write_config(tmp_path: Path, sources: list[dict], **top) -> Path:
    path = tmp_path / "mixture.yaml"
    path.write_text(yaml.safe_dump({"sources": sources, **top}, allow_unicode=True))
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    return path


def alpaca_records(n: int, prefix: str = "Question") -> list[dict]:
    return [{"instruction": f"{prefix} number {i}?", "input": None, "output": f"Answer {i}."} for i in range(n)]


def run_prepare(tmp_path: Path, sources: list[dict], **top) -> tuple[dict, Path]:
    out = tmp_path / "out"
    return prepare(load_config(write_config(tmp_path, sources, **top)), out, progress=False), out


def test_unknown_role_and_empty_response_are_rejected_with_the_reason(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text(json.dumps([
        {"id": "ok", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
        {"id": "bing", "conversations": [{"from": "human", "value": "Hi"}, {"from": "bing", "value": "Hello!"}]},
        {"id": "empty", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "  "}]},
        {"id": "gpt first", "conversations": [{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "Yo"},
                                              {"from": "gpt", "value": "Hello!"}]},
        {"id": "ends with human", "conversations": [{"from": "human", "value": "Hi"}]},
    ]))  # fmt: skip
    stats, out = run_prepare(tmp_path, [{"name": "sg", "format": "share_gpt", "paths": [str(path)], "lang": "en"}])
    assert stats["sources"]["sg"]["languages"]["en"]["dropped"] == {
        "unknown role 'bing'": 1,
        "empty assistant message": 1,
        "expected user, got assistant": 1,
        "no assistant response at the end": 1,
    }
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    assert [(d["where"], d["reason"]) for d in dropped] == [
        (f"{path}[1]", "unknown role 'bing'"),
        (f"{path}[2]", "empty assistant message"),
        (f"{path}[3]", "message 0: expected user, got assistant"),
        (f"{path}[4]", "no assistant response at the end"),
    ]
    assert [c.messages[-1].content for c in read_split(out)] == ["Hello!"]


def test_malformed_records_are_counted_with_file_line_and_strict_stops(tmp_path, capsys):
    path = tmp_path / "ma.jsonl"
    path.write_text('{"instruction": "Hola?", "input": null, "output": "Hola."}\n{"instruction": 1}\nnot json\n')
    config = write_config(tmp_path, [{"name": "ma", "format": "alpaca", "paths": [path.name], "lang": "es"}])
    out = tmp_path / "out"
    assert main(["instruct", "prepare", "--config", str(config), "--out", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    source = stats["sources"]["ma"]
    assert source["malformed"] == {"field 'instruction' is int, expected a string": 1, "invalid JSON": 1}
    assert source["malformed_at"] == [f"{path}:2: field 'instruction' is int, expected a string",
                                      f"{path}:3: invalid JSON"]  # fmt: skip
    assert (source["read"], source["kept"], stats["total"]["malformed"]) == (1, 1, 2)
    assert main(["instruct", "stats", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{path}:3: invalid JSON" in printed and "ma      es" in printed

    (tmp_path / "wrong").mkdir()
    wrong = write_config(
        tmp_path / "wrong", [{"name": "d", "format": "alpaca", "paths": [str(FIXTURES / "dolly.jsonl")]}]
    )
    assert main(["instruct", "prepare", "--config", str(wrong), "--out", str(tmp_path / "wrong" / "out")]) == 0
    assert "source 'd' kept no conversation (mostly: missing field 'output')" in capsys.readouterr().err

    strict_out = tmp_path / "strict"
    assert main(["instruct", "prepare", "--config", str(config), "--out", str(strict_out), "--strict"]) == 1
    assert f"{path}:2: malformed alpaca record" in capsys.readouterr().err
    assert not (strict_out / "train.jsonl").exists()


def test_cap_samples_by_seeded_hash_independent_of_file_order(tmp_path):
    records = alpaca_records(40)
    forward = write_jsonl(tmp_path / "f.jsonl", records)
    backward = write_jsonl(tmp_path / "b.jsonl", records[::-1])

    def kept(path: Path, seed: int) -> set[str]:
        run_dir = tmp_path / f"{path.stem}{seed}"
        run_dir.mkdir()
        source = {"name": "s", "format": "alpaca", "paths": [str(path)], "lang": "en", "max_records": 10}
        stats, out = run_prepare(run_dir, [source], seed=seed)
        assert stats["sources"]["s"]["dropped"] == {"over max_records": 30}
        return {c.messages[0].content for c in read_split(out)}

    first = kept(forward, 1)
    assert len(first) == 10
    assert kept(backward, 1) == first
    assert kept(forward, 2) != first


def test_exact_dedup_across_sources_and_whitespace(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", alpaca_records(3))
    b = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "Question  number 1?", "input": "", "output": "Answer 1.\n"},
                                           {"instruction": "Other?", "input": None, "output": "Yes."}])  # fmt: skip
    sources = [{"name": "a", "format": "alpaca", "paths": [str(a), str(a)], "lang": "en"},
               {"name": "b", "format": "alpaca", "paths": [str(b)], "lang": "en"}]  # fmt: skip
    stats, _ = run_prepare(tmp_path, sources)
    assert stats["sources"]["a"]["dropped"] == {"duplicate": 3}
    assert stats["sources"]["b"]["dropped"] == {"duplicate": 1}
    assert stats["total"]["kept"] == 4
    undeduped, _ = run_prepare(tmp_path, sources, dedup=False)
    assert undeduped["total"]["kept"] == 8


def test_language_fixed_record_or_identified(tmp_path):
    texts = write_jsonl(tmp_path / "t.jsonl", [
        {"instruction": "¿Cuál es la capital de Francia y por qué es famosa?", "input": None,
         "output": "La capital de Francia es París, famosa por la torre Eiffel y sus museos."},
        {"instruction": "フランスの首都はどこですか?", "input": None, "output": "フランスの首都はパリです。"},
        {"instruction": "Was ist die Hauptstadt von Frankreich?", "input": None,
         "output": "Die Hauptstadt von Frankreich ist Paris."},
    ])  # fmt: skip
    sources = [{"name": "lid", "format": "alpaca", "paths": [str(texts)]},
               {"name": "oasst", "format": "open_assistant", "paths": [str(FIXTURES / "oasst.trees.jsonl")]},
               {"name": "fixed", "format": "dolly", "paths": [{"path": str(FIXTURES / "dolly.jsonl"), "lang": "xx"}],
                "lang": "en"}]  # fmt: skip
    stats, _ = run_prepare(tmp_path, sources)
    by_source = {name: sorted(source["languages"]) for name, source in stats["sources"].items()}
    assert by_source == {"lid": ["de", "es", "ja"], "oasst": ["en", "pt"], "fixed": ["xx"]}
    assert sorted(stats["languages"]) == ["de", "en", "es", "ja", "pt", "xx"]
    unidentified, _ = run_prepare(tmp_path, sources[:1], language_id=False)
    assert list(unidentified["sources"]["lid"]["languages"]) == ["und"]


def test_length_filter_counts_rendered_tokens(tmp_path, corpus_tokenizer):
    corpus_tokenizer.save(tmp_path / "tok")
    short = {"instruction": "Hi?", "input": None, "output": "Hello."}
    long = {"instruction": "Tell me a story. " * 30, "input": None, "output": "Once upon a time. " * 30}
    path = write_jsonl(tmp_path / "l.jsonl", [short, long])
    length = {"max_tokens": 64, "tokenizer": "tok", "template": "multialpaca"}
    stats, out = run_prepare(tmp_path, [{"name": "s", "format": "alpaca", "paths": [path.name], "lang": "en"}],
                             length=length)  # fmt: skip
    assert stats["sources"]["s"]["dropped"] == {"longer than 64 tokens": 1}
    assert [c.messages[0].content for c in read_split(out)] == ["Hi?"]
    counter = LengthFilter(load_config(tmp_path / "mixture.yaml").length)
    conversation = Conversation(turns("Hi?", "Hello."), "en", "s")
    assert counter.count(conversation) == len(encode(corpus_tokenizer, "multialpaca", conversation).ids)
    whole = len(corpus_tokenizer.encode("Hi?\n\nHello."))  # the text at once, plus </s>: the same up to a merge
    assert whole <= counter.count(conversation) <= whole + 2
    counter.template = None
    assert counter.count(conversation) == len(corpus_tokenizer.encode("Hi?\nHello.")) + 1


def test_validation_split_is_stable_and_the_counts_add_up(tmp_path):
    records = alpaca_records(400)
    forward = write_jsonl(tmp_path / "f.jsonl", records)
    backward = write_jsonl(tmp_path / "b.jsonl", records[::-1])
    splits = []
    for path in (forward, backward, forward):
        run_dir = tmp_path / f"run{len(splits)}"
        run_dir.mkdir()
        source = {"name": "s", "format": "alpaca", "paths": [str(path)], "lang": "en"}
        stats, out = run_prepare(run_dir, [source], validation_fraction=0.25)
        splits.append({c.messages[0].content for c in read_split(out, "validation")})
        counts = stats["sources"]["s"]
        assert counts["read"] == counts["train"] + counts["validation"] + sum(counts["dropped"].values()) == 400
    assert splits[0] == splits[1] == splits[2]
    assert 60 < len(splits[0]) < 140


def test_config_errors_name_the_key(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", alpaca_records(1))
    source = {"name": "a", "format": "alpaca", "paths": [str(path)]}
    cases = [
        ([source], {"dedupe": True}, "mixture.yaml: dedupe: unknown key"),
        ([{**source, "cap": 3}], {}, "sources[0].cap: unknown key"),
        ([{**source, "format": "vicuna"}], {}, "sources[0].format: 'vicuna' is unknown"),
        ([{"name": "a", "paths": [str(path)]}], {}, "sources[0].format: missing key"),
        ([{**source, "max_records": 0}], {}, "sources[0].max_records: must be a positive integer"),
        ([{**source, "lang": "english"}], {}, "not an ISO 639-1 code"),
        ([source], {"length": {"max_tokens": 10}}, "needs length.tokenizer"),
        ([source], {"validation_fraction": 1.5}, "validation_fraction: must be in [0, 1)"),
        ([source], {"dedup": "yes"}, "dedup: expected bool, got 'yes'"),
        ([source], {"length": {"max_tokens": "many"}}, "length.max_tokens: expected int"),
    ]
    for sources, top, message in cases:
        with pytest.raises(PolyLMError, match=message.replace("[", r"\[").replace(")", r"\)")):
            load_config(write_config(tmp_path, sources, **top))
    config = load_config(write_config(tmp_path, [{**source, "paths": ["missing.jsonl"]}]))
    with pytest.raises(PolyLMError, match=r"missing\.jsonl: file not found"):
        prepare(config, tmp_path / "out", progress=False)


def test_example_configs_parse():
    chat = load_config(REPO / "examples" / "instruct" / "chat-mixture.yaml")
    names = "code_alpaca dolly flan_v2 gpt4_alpaca_en gpt4_alpaca_zh multilingual_alpaca open_assistant share_gpt"
    assert [s.name for s in chat.sources] == [*names.split(), "gpteacher_codegen"]
    assert {s.name: s.max_records for s in chat.sources}["flan_v2"] == 100_000
    multialpaca = load_config(REPO / "examples" / "instruct" / "multialpaca.yaml")
    assert [p.lang for p in multialpaca.sources[0].paths] == ["es", "ja", "pt"]


@pytest.mark.skipif(not MULTIALPACA.is_dir(), reason="../shared/data/instructions/multialpaca is absent")
def test_prepare_real_multialpaca_gives_es_ja_pt(tmp_path, capsys):
    config = yaml.safe_load((REPO / "examples" / "instruct" / "multialpaca.yaml").read_text())
    config["sources"][0]["max_records"] = 600
    for entry in config["sources"][0]["paths"]:
        entry["path"] = str(MULTIALPACA / Path(entry["path"]).name)
    path = tmp_path / "multialpaca.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["instruct", "prepare", "--config", str(path), "--out", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert sorted(stats["languages"]) == ["es", "ja", "pt"]
    assert stats["total"]["read"] == 9958 + 10191 + 10825
    assert stats["total"]["kept"] == 600
    assert all(100 < stats["languages"][lang]["kept"] < 300 for lang in ("es", "ja", "pt"))
    conversations = read_split(out) + read_split(out, "validation")
    assert {c.lang for c in conversations} == {"es", "ja", "pt"}
    assert {c.source for c in conversations} == {"multialpaca"}
    assert json.loads((out / "mixture.json").read_text())["sources"][0]["max_records"] == 600
    capsys.readouterr()
    assert main(["instruct", "stats", str(out)]) == 0
    assert "multialpaca  ja" in capsys.readouterr().out
