"""Property tests (issue M) for the parsers of user input other than corpora: instruction files, YAML configs,
self-instruct answers, prompt templates and the tokenizer.

Each says, for inputs Hypothesis makes up: a result or a PolyLMError that names the file (and line or key), never
another exception; a bad record is counted where it is and the good records around it come out unchanged. The
cases Hypothesis found are kept below as explicit regression tests, each with the bug it showed.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import time
from pathlib import Path
from typing import get_type_hints

import pytest
import sentencepiece as spm
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import EMBEDDED_CORPUS, REPO
from polylm.configfile import read_json
from polylm.data.prepare import DataConfig, document_steps
from polylm.data.prepare import load_config as load_data_config
from polylm.errors import PolyLMError
from polylm.instruct.formats import FORMATS, Entry
from polylm.instruct.loaders import read_conversations, read_entries
from polylm.instruct.mixture import MixtureConfig
from polylm.instruct.mixture import load_config as load_mixture_config
from polylm.instruct.records import Conversation, Message
from polylm.selfinstruct.locales import LOCALES
from polylm.selfinstruct.parser import parse_answer
from polylm.selfinstruct.prompts import SEPARATOR, format_task
from polylm.selfinstruct.task import make_task
from polylm.templates import TEMPLATES, jinja_template, render_messages, render_prompt
from polylm.tokenizer import Tokenizer, TokenizerTrainingConfig, train_tokenizer
from polylm.train.config import TrainConfig, load_train_config

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same examples on every run, so that CI is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

ONE_LINE = st.text().map(lambda text: text.replace("\n", " "))
"""Any Unicode on one line (Hypothesis leaves out lone surrogates; strategies below add them on purpose)."""


def _json_line(record: object) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def _utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _encodable(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except (ValueError, RecursionError):
        return False


# ---- instruction files

GOOD_RECORDS = {
    "alpaca": st.fixed_dictionaries(
        {"instruction": st.text(), "output": st.text()}, optional={"input": st.none() | st.text()}
    ),
    "dolly": st.fixed_dictionaries(
        {"instruction": st.text(), "context": st.text(), "response": st.text(), "category": st.text()}
    ),
    "flan_v2": st.fixed_dictionaries({"inputs": st.text(), "targets": st.text(), "task_name": st.text()}),
    "gpteacher": st.fixed_dictionaries({"instruction": st.text(), "input": st.text(), "response": st.text()}),
    "share_gpt": st.fixed_dictionaries(
        {
            "id": st.text(),
            "conversations": st.lists(
                st.fixed_dictionaries(
                    {"from": st.sampled_from(["human", "gpt", "system", "bing"]) | st.text(), "value": st.text()}
                ),
                max_size=4,
            ),
        }
    ),
}
REQUIRED = {
    "alpaca": "output",
    "dolly": "response",
    "flan_v2": "targets",
    "gpteacher": "instruction",
    "share_gpt": "conversations",
}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def bad_lines(record: st.SearchStrategy[dict], required: str) -> st.SearchStrategy[bytes]:
    """Lines (no `\\n`) that are not a good record of the format: every kind of damage a corpus has."""
    latin1 = st.text(st.characters(min_codepoint=0xA0, max_codepoint=0xFF), min_size=1).map(
        lambda t: t.encode("latin-1")
    )
    return st.one_of(
        ONE_LINE.map(str.encode).filter(
            lambda line: line.strip(b" \t\r") and not line.startswith(b"\xef\xbb\xbf") and not _json_object(line)
        ),  # (a byte order mark is dropped on line 1)
        JSON_VALUES.filter(lambda value: not isinstance(value, dict)).map(_json_line),  # JSON, but not an object
        latin1.filter(lambda line: not _utf8(line)),
        st.tuples(
            record.map(_json_line), st.integers(0, 40), st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])
        ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :]),  # one invalid UTF-8 sequence in a good record
        record.map(lambda r: _json_line({k: v for k, v in r.items() if k != required})),  # a required field gone
        st.tuples(record, JSON_VALUES.filter(lambda v: not isinstance(v, (str, list)))).map(
            lambda t: _json_line({**t[0], required: t[1]})
        ),  # ... or of another type
        record.map(lambda r: _json_line(r).replace(b"{", b"{\x01", 1)),  # a raw control character
        # Found by these tests: a lone surrogate escape (JSON allows it, UTF-8 cannot hold it) was read as text and
        # crashed the writers later; a 5000-digit integer or 5000 nested brackets raised ValueError/RecursionError.
        record.map(lambda r: json.dumps({**r, required: "\ud800"}).encode()),
        st.integers(4301, 6000).map(lambda n: b'{"x": ' + b"7" * n + b"}"),
        st.integers(3000, 20000).map(lambda n: b"[" * n + b"]" * n),
        st.text(" \x0b\x0c\x1c\x1d\x85\xa0\u2028\u3000")
        .filter(lambda t: t.strip(" "))
        .map(str.encode),  # not JSON space
    )


def _entries(path: Path, fmt: str) -> list[Entry]:
    entries = list(read_entries(path, fmt, "src"))
    for entry in entries:
        assert (entry.conversation is None) != (entry.malformed is None), entry
        assert entry.where.startswith(str(path)), entry
        if entry.conversation is not None:
            assert entry.conversation.source == "src"
            assert all(isinstance(m.role, str) and isinstance(m.content, str) for m in entry.conversation.messages)
            assert all(_encodable(m.role + m.content) for m in entry.conversation.messages)
    return entries


def _array_file(content: bytes) -> bool:
    """Whether the loader reads `content` as one JSON array (by design): it is one, or opens with `[` alone."""
    first = content.lstrip(b" \t\r\n\xef\xbb\xbf").split(b"\n", 1)[0].strip()
    try:
        return first == b"[" or isinstance(json.loads(content.decode("utf-8-sig")), list)
    except (ValueError, RecursionError):
        return False


@st.composite
def mixed_lines(draw, fmt: str) -> tuple[list[bytes], list[dict | None]]:
    """Good records of `fmt` and bad lines, shuffled, with blank lines here and there: (lines, record or None)."""
    record = GOOD_RECORDS[fmt]
    rows = draw(
        st.lists(
            record.map(lambda r: (_json_line(r), r))
            | bad_lines(record, REQUIRED[fmt]).map(lambda line: (line, None))
            | st.sampled_from([b"", b"  \t", b"\r"]).map(lambda line: (line, {})),
            max_size=12,
        )
    )
    return [line for line, _ in rows], [r for _, r in rows]


@pytest.mark.parametrize("fmt", sorted(GOOD_RECORDS))
@PROPERTY
@given(data=st.data())
def test_instruction_lines_bad_ones_counted_where_they_are_good_ones_unchanged(tmp_path, fmt, data):
    """Every non-blank line gives its own entries at FILE:LINE: a good record exactly the conversation its
    record makes, a bad one a single malformed entry."""
    lines, records = data.draw(mixed_lines(fmt))
    content = b"\n".join(lines) + b"\n"
    assume(not _array_file(content))
    path = tmp_path / "set.jsonl"
    path.write_bytes(content)
    reader = FORMATS[fmt]()
    expected = []
    for number, record in enumerate(records, start=1):
        where = f"{path}:{number}"
        if record is None:
            expected.append((where, "malformed"))
        elif record:
            expected += [(where, entry.conversation) for entry in reader.record(record, where)]
    got = _entries(path, fmt)
    if not expected:
        assert [(e.where, e.malformed) for e in got] == [(str(path), "no records in the file")]
        return
    got_rows = [(e.where, "malformed" if e.malformed else dataclasses.replace(e.conversation, source="")) for e in got]
    assert got_rows == expected


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@PROPERTY
@given(content=st.binary(max_size=400), gz=st.booleans(), cut=st.integers(0, 400))
def test_instruction_file_of_any_bytes_gives_entries_never_an_exception(tmp_path, fmt, content, gz, cut):
    """Any bytes, plain or gzip (whole or cut anywhere): entries only, each a conversation or malformed."""
    path = tmp_path / ("set.jsonl.gz" if gz else "set.jsonl")
    path.write_bytes(gzip.compress(content)[:cut] if gz else content)
    entries = _entries(path, fmt)
    assert entries  # even an empty file is one malformed entry, so that it is counted


@PROPERTY
@given(items=st.lists(JSON_VALUES | GOOD_RECORDS["alpaca"], max_size=8))
def test_json_array_items_are_entries_at_their_index(tmp_path, items):
    path = tmp_path / "set.json"
    path.write_text(json.dumps(items, indent=1))
    entries = _entries(path, "alpaca")
    reader = FORMATS["alpaca"]()
    expected = [
        (f"{path}[{i}]", entry.conversation if isinstance(item, dict) else None)
        for i, item in enumerate(items)
        for entry in (reader.record(item, "") if isinstance(item, dict) else [None])
    ]
    got = [(e.where, e.conversation and dataclasses.replace(e.conversation, source="")) for e in entries]
    assert got == (expected or [(str(path), None)])


@st.composite
def flat_tables(draw) -> list[dict]:
    """Open Assistant's flat message table with any parent links: roots, replies, orphans, loops, self-parents."""
    count = draw(st.integers(1, 10))
    ids = [f"m{i}" for i in range(count)]
    return [
        {
            "message_id": message_id,
            "parent_id": draw(st.none() | st.sampled_from([*ids, "elsewhere"])),
            "role": draw(st.sampled_from(["prompter", "assistant"])),
            "text": message_id,  # the text names the message, to find it in the conversations
            **draw(st.fixed_dictionaries({}, optional={"deleted": st.booleans(), "review_result": st.booleans()})),
        }
        for message_id in ids
    ]


@PROPERTY
@given(table=flat_tables())
def test_open_assistant_flat_table_accounts_for_every_message(tmp_path, table):
    """Each message is in a conversation (kept or rejected) or malformed at its line, except what the format
    leaves out by design: the replies below a rejected message (counted with it) and a follow-up prompt that no
    answer follows."""
    path = tmp_path / "oa.messages.jsonl"
    path.write_bytes(b"\n".join(map(_json_line, table)) + b"\n")
    entries = _entries(path, "open_assistant")
    seen = {m.content for e in entries if e.conversation for m in e.conversation.messages}
    seen |= {table[int(e.where.rsplit(":", 1)[1]) - 1]["text"] for e in entries if e.malformed}
    children: dict[str, list[str]] = {}
    for message in table:
        children.setdefault(message["parent_id"], []).append(message["message_id"])
    roles = {message["message_id"]: message["role"] for message in table}

    def below(message_id: str) -> set[str]:
        found, stack = set(), list(children.get(message_id, []))
        while stack:
            if (child := stack.pop()) not in found:
                found.add(child)
                stack.extend(children.get(child, []))
        return found

    by_design = {m for e in entries if e.rejected for m in below(e.conversation.messages[-1].content)}
    by_design |= {
        m["message_id"]
        for m in table
        if m["parent_id"] is not None
        and m["role"] == "prompter"
        and "assistant" not in {roles[d] for d in below(m["message_id"])}
    }
    assert {message["text"] for message in table} - by_design <= seen


def test_open_assistant_parent_loop_is_malformed_not_lost(tmp_path):
    """Regression (found by the flat-table property): messages whose parent_ids form a loop were never reached
    from a root and vanished without a count."""
    table = [
        {"message_id": "a", "parent_id": "b", "role": "prompter", "text": "q"},
        {"message_id": "b", "parent_id": "a", "role": "assistant", "text": "r"},
        {"message_id": "c", "parent_id": "c", "role": "prompter", "text": "self"},
    ]
    path = tmp_path / "oa.messages.jsonl"
    path.write_bytes(b"\n".join(map(_json_line, table)) + b"\n")
    entries = list(read_entries(path, "open_assistant", "oa"))
    loop = "parent_id loop: no root message above it"
    assert [(e.where, e.malformed) for e in entries] == [(f"{path}:{n}", loop) for n in (1, 2, 3)]


def test_open_assistant_reply_chain_thousands_deep(tmp_path):
    """Regression: a 5000-message reply chain in the flat table raised RecursionError (the walk was recursive)."""
    depth = 5000
    table = [
        {
            "message_id": f"m{i}",
            "parent_id": f"m{i - 1}" if i else None,
            "role": ("prompter", "assistant")[i % 2],
            "text": f"t{i}",
        }
        for i in range(depth)
    ]
    path = tmp_path / "oa.messages.jsonl"
    path.write_bytes(b"\n".join(map(_json_line, table)) + b"\n")
    (entry,) = read_entries(path, "open_assistant", "oa")
    assert [m.content for m in entry.conversation.messages] == [f"t{i}" for i in range(depth)]
    assert entry.where == f"{path}:{depth}"


@pytest.mark.parametrize(
    ("line", "reason"),
    [  # Regressions: each raised from read_entries (ValueError, RecursionError) or was kept and crashed later.
        (b'{"instruction": "a", "output": "b", "n": ' + b"1" * 5000 + b"}", "invalid JSON"),
        (b"[" * 100_000, "invalid JSON"),
        (b'{"instruction": "a\\ud800", "output": "b"}', "field 'instruction' holds a lone surrogate, not valid UTF-8"),
        ("\u3000".encode(), "invalid JSON"),  # skipped as blank, uncounted, though it is not JSON
    ],
)
def test_unreadable_instruction_lines_are_malformed(tmp_path, line, reason):
    path = tmp_path / "set.jsonl"
    path.write_bytes(b'{"instruction": "i", "output": "o"}\n' + line + b'\n{"instruction": "j", "output": "p"}\n')
    entries = list(read_entries(path, "alpaca", "s"))
    assert [(e.where, e.malformed) for e in entries] == [
        (f"{path}:1", None),
        (f"{path}:2", reason),
        (f"{path}:3", None),
    ]


CONVERSATION_RECORDS = st.builds(
    lambda messages, lang, source: Conversation(tuple(Message(r, c) for r, c in messages), lang, source),
    st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text()), max_size=4),
    st.text(max_size=3),
    st.text(max_size=5),
)


@PROPERTY
@given(
    good=st.lists(CONVERSATION_RECORDS, max_size=4),
    bad=st.none() | st.binary(max_size=60) | JSON_VALUES.map(_json_line),
    position=st.integers(0, 4),
)
def test_read_conversations_round_trips_or_names_the_line(tmp_path, good, bad, position):
    """What `instruct prepare` writes reads back equal; any other line is a PolyLMError at FILE:LINE."""
    lines = [json.dumps(c.to_dict(), ensure_ascii=False).encode() for c in good]
    position = min(position, len(lines))
    if bad is not None:
        lines.insert(position, bad.replace(b"\n", b" "))
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        got = list(read_conversations(path))
    except PolyLMError as exc:
        assert bad is not None and str(exc).startswith(f"{path}:{position + 1}: not a conversation record")
        return
    assert bad is None or not bad.strip(b" \t\r\n")  # only a blank line is not a record
    assert got == good


def test_read_conversations_with_bad_utf8_or_types_names_the_line(tmp_path):
    """Regression: invalid UTF-8 raised UnicodeDecodeError from the file iterator, and non-string contents were
    accepted (and crashed training later)."""
    path = tmp_path / "train.jsonl"
    for line in (b"\xff\xfe", b'{"messages": [{"role": "user", "content": 3}], "lang": "en", "source": "s"}'):
        path.write_bytes(line + b"\n")
        with pytest.raises(PolyLMError, match=rf"^{path}:1: not a conversation record"):
            list(read_conversations(path))


# ---- YAML configs


def _conforms(value: object, annotation: object) -> bool:
    """Whether a loaded config value has its field's declared type (recursing into sections)."""
    if dataclasses.is_dataclass(value):
        hints = get_type_hints(type(value))
        return all(_conforms(getattr(value, f.name), hints[f.name]) for f in dataclasses.fields(value))
    origin = getattr(annotation, "__origin__", None)
    args = getattr(annotation, "__args__", ())
    if origin is list:
        return isinstance(value, list) and all(_conforms(item, args[0]) for item in value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[float, ...]: any length
            return isinstance(value, tuple) and all(_conforms(item, args[0]) for item in value)
        return isinstance(value, tuple) and len(value) == len(args) and all(map(_conforms, value, args))
    if origin is dict:
        return isinstance(value, dict)
    if args:  # a union: X | None
        return any(_conforms(value, arg) for arg in args)
    if annotation is float:
        return isinstance(value, float)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


EXAMPLES = {
    "data": (REPO / "examples/data/curriculum.yaml", load_data_config, DataConfig),
    "instruct": (REPO / "examples/instruct/chat-mixture.yaml", load_mixture_config, MixtureConfig),
    "pretrain": (REPO / "examples/pretrain/tiny.yaml", load_train_config, TrainConfig),
}
YAML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**400), 10**400)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["1e-4", "en", "polylm", "a.jsonl", "alpaca", "chat", "bf16", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested config (into lists too), for choosing where to damage it."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [prefix] + [path for key, item in items for path in _paths(item, (*prefix, key))]


def _load(kind: str, path: Path) -> object:
    """The config, or None after checking the error is one line naming the file."""
    _, load, cls = EXAMPLES[kind]
    try:
        config = load(path)
    except PolyLMError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(path)), message
        return None
    assert isinstance(config, cls) and _conforms(config, cls), config
    return config


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
@PROPERTY
@given(data=st.data())
def test_damaged_config_is_an_error_naming_file_or_a_valid_config(tmp_path, kind, data):
    """An example config with one value replaced, one key renamed or one entry removed, anywhere in it: a
    one-line PolyLMError starting with the file, or a config whose every field has its declared type."""
    example, _, _ = EXAMPLES[kind]
    config = yaml.safe_load(example.read_text())
    key_path = data.draw(st.sampled_from(_paths(config)))
    node = config
    for key in key_path[:-1]:
        node = node[key]
    action = data.draw(st.sampled_from(["replace", "rename", "remove"]) if key_path else st.just("replace"))
    if not key_path:
        config = data.draw(YAML_VALUES)
    elif action == "replace":
        node[key_path[-1]] = data.draw(YAML_VALUES)
    elif action == "remove":
        del node[key_path[-1]]
    elif isinstance(node, dict):
        node[data.draw(st.text(min_size=1, max_size=8))] = node.pop(key_path[-1])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    _load(kind, path)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
@PROPERTY
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_config_file_of_any_bytes(tmp_path, kind, content):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    _load(kind, path)


@pytest.mark.parametrize(
    ("content", "message"),
    [  # Regressions: each escaped as ValueError, RecursionError, UnicodeDecodeError or OverflowError.
        (b"seed: 2001-02-30\n", ": not valid YAML (day is out of range for month)"),
        (b"seed: " + b"7" * 5000 + b"\n", ": not valid YAML (Exceeds the limit (4300 digits)"),
        (b"a: " + b"[" * 5000, ": not valid YAML (maximum recursion depth exceeded"),
        (b"seed: 1\nb: \xff\n", ":3: not valid UTF-8"),
        (b"validation_fraction: 1" + b"0" * 400 + b"\n", ": validation_fraction: expected a number, got 1000"),
    ],
)
def test_config_regressions_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "mixture.yaml"
    path.write_bytes(b"sources: [{name: a, format: alpaca, paths: [a.jsonl]}]\n" + content)
    with pytest.raises(PolyLMError) as info:
        load_mixture_config(path)
    assert str(info.value).startswith(f"{path}{message}") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kind", "content", "message"),
    [  # Regressions: a wrong type in a list or mapping field passed `typed` and raised TypeError later.
        ("data", "sources: [{name: a, lang: en, paths: 5}]", "sources[0].paths: expected a list, got 5"),
        ("data", "sources: [{name: a, lang: en, paths: [7]}]", "sources[0].paths[0]: expected str, got 7"),
        (
            "data",
            "sources: [{name: a, lang: en, paths: [a.txt]}]\npipeline: {quality: [1]}",
            "pipeline.quality: expected a mapping, got [1]",
        ),
        ("pretrain", "optim: {betas: [0.9]}", "optim.betas: expected a list of 2 numbers, got [0.9]"),
        ("pretrain", "model: {overrides: 3}", "model.overrides: expected a mapping, got 3"),
        (
            "instruct",
            "sources: [{name: a, format: alpaca, paths: [a.jsonl]}]\nlid_languages: [en, 3]",
            "lid_languages[1]: expected str, got 3",
        ),
    ],
)
def test_config_container_types_are_checked(tmp_path, kind, content, message):
    path = tmp_path / "config.yaml"
    path.write_text(content + "\n")
    with pytest.raises(PolyLMError) as info:
        EXAMPLES[kind][1](path)
    assert str(info.value) == f"{path}: {message}"


def test_pretrain_preset_of_another_type_is_an_error(tmp_path):
    """Found by the damaged-config property (a list as `preset:` raised TypeError); fixed in train/config.py."""
    path = tmp_path / "pretrain.yaml"
    path.write_text("preset: [tiny]\ndata: d\n")
    with pytest.raises(PolyLMError, match=f"^{re.escape(str(path))}: "):
        load_train_config(path)


def test_pretrain_range_errors_name_the_file(tmp_path):
    path = tmp_path / "pretrain.yaml"
    path.write_text("data: d\noptim: {lr: -1}\n")
    with pytest.raises(PolyLMError, match=f"^{re.escape(str(path))}: optim.lr"):
        load_train_config(path)


def test_mixture_format_of_another_type_is_an_error(tmp_path):
    path = tmp_path / "mixture.yaml"
    path.write_text("sources: [{name: a, format: {x: 1}, paths: [a.jsonl]}]\n")
    with pytest.raises(PolyLMError, match=f"^{re.escape(str(path))}: "):
        load_mixture_config(path)


@pytest.mark.parametrize(
    "content",
    [
        "sources: [{name: p, parallel: [{tsv: null, src_lang: en, tgt_lang: de}]}]",
        "sources: [{name: p, parallel: [{tsv: [a], src_lang: en, tgt_lang: de}]}]",
        'sources: [{name: m, lang: en, paths: ["a\\0.txt"]}]',
    ],
)
def test_data_config_file_values_are_checked(tmp_path, content):
    path = tmp_path / "data.yaml"
    path.write_text(content + "\n")
    with pytest.raises(PolyLMError, match=f"^{re.escape(str(path))}: "):
        load_data_config(path)


@pytest.mark.parametrize("section", ["pipeline: {quality: {min_chrs: 1}}", "curriculum: {stages: [{share: 1}]}"])
def test_data_config_sections_are_checked_on_load(tmp_path, section):
    """`pipeline.quality` and `curriculum.stages` are typed sections: an unknown key is an error naming the file
    and the key on load, not a TypeError when preparing, after all the reading."""
    path = tmp_path / "data.yaml"
    path.write_text(f"sources: [{{name: m, lang: en, paths: [a.txt]}}]\n{section}\n")
    with pytest.raises(PolyLMError, match=f"^{re.escape(str(path))}: "):
        config = load_data_config(path)
        document_steps(config, bilingual=False)
        config.curriculum.build()


@PROPERTY
@given(content=st.binary(max_size=100))
def test_read_json_of_any_bytes(tmp_path, content):
    path = tmp_path / "data.json"
    path.write_bytes(content)
    try:
        read_json(path)
    except PolyLMError as exc:
        assert str(exc).startswith(f"{path}: not valid JSON") and "\n" not in str(exc)


# ---- self-instruct answers

LABELS = sorted(
    {name for locale in LOCALES.values() for names in locale.labels for name in names}
    | {"Instruction", "Input", "Output", "İnput", "ÇIKTI", "OUTPUT"}
)
NUMBERS = st.integers(0, 30).map(str) | st.sampled_from(["٢", "０２"]) | st.integers(4301, 4400).map(lambda n: "7" * n)
ANSWER_PIECES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(LABELS),
    st.tuples(NUMBERS, st.sampled_from(LABELS), st.sampled_from([":", "：", ":**"])).map(
        lambda t: f"{t[0]}. {t[1]}{t[2]}"
    ),
    st.sampled_from(["1. ", "2.", "\n", "\n\n", ": ", "：", "**", "###", "---", "<noinput>", "</s>", " ", "٢. "]),
    st.tuples(st.sampled_from("#-="), st.integers(2, 80)).map(lambda t: t[0] * t[1]),  # separator runs
)


@PROPERTY
@given(pieces=st.lists(ANSWER_PIECES, max_size=30), first=st.integers(1, 30), truncated=st.booleans())
def test_any_model_answer_parses_to_tasks_or_none(pieces, first, truncated):
    """Arbitrary answers, built from labels, numbers, separators and any text: None (no label: asked again) or
    tasks each with a one-line instruction; a truncated answer loses exactly its last task."""
    text = "".join(pieces)
    parsed = parse_answer(text, first, truncated)
    if parsed is None:
        return
    assert all(task.instruction and "\n" not in task.instruction for task in parsed.tasks)
    whole = parse_answer(text, first)
    assert parsed.truncated == (1 if truncated and whole.tasks else 0)
    assert parsed.tasks == whole.tasks[: len(whole.tasks) - parsed.truncated]


TASK_TEXT = st.text(st.characters(categories=["L", "Zs"]) | st.sampled_from(",;?!'()"), max_size=30)
"""Text without a colon, digits, newlines or `#-=<`: no label, number or separator can appear in it."""


@PROPERTY
@given(
    tasks=st.lists(st.builds(make_task, TASK_TEXT, TASK_TEXT, TASK_TEXT), min_size=1, max_size=5),
    first=st.integers(1, 20),
)
def test_formatted_tasks_parse_back(tasks, first):
    """The prompt's block format round-trips through the parser: what the demos show is what is read back."""
    tasks = [task for task in tasks if task.instruction]
    assume(tasks)
    text = "".join(f"{SEPARATOR}\n{format_task(first + i, task)}" for i, task in enumerate(tasks))
    parsed = parse_answer(text, first)
    assert parsed.tasks == tasks


@pytest.mark.parametrize(
    "text",
    [  # Regressions: KeyError (re's IGNORECASE matches İ/ı where casefold differs), ValueError (int() of >4300
        # digits) and exponential backtracking on a long run of separator characters (minutes for 60 `#`).
        "1. İnstruction: Ad\n1. Output: b",
        "1" * 5000 + ". Instruction: a\nOutput: b",
        "Instruction: a\nOutput: " + "#" * 60 + ".",
        "Instruction: a\nOutput: b " + "-=" * 40 + "=" * 60 + "x",
    ],
)
def test_parser_regressions(text):
    start = time.perf_counter()
    parsed = parse_answer(text, 1)
    assert parsed is not None and len(parsed.tasks) == 1
    assert time.perf_counter() - start < 1


# ---- prompt templates

ROLES = st.sampled_from(["system", "developer", "user", "assistant"]) | st.text(max_size=5)
MESSAGES = st.lists(st.tuples(ROLES, st.text(max_size=20) | st.sampled_from(["\n\n", "a\n\n\nb", ""])), max_size=6)
JINJA = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)


def _raise(message: str):
    raise ValueError(message)


JINJA.globals["raise_exception"] = _raise


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@PROPERTY
@given(messages=MESSAGES)
def test_render_messages_is_a_string_or_an_error_and_equals_its_jinja_twin(template, messages):
    """Any roles and Unicode contents: a prompt or a PolyLMError; the GGUF's Jinja template renders the same."""
    try:
        rendered = render_messages(template, messages)
    except PolyLMError:
        assert _refused(messages)
        return
    assert not _refused(messages)
    jinja = JINJA.from_string(jinja_template(template))
    assert jinja.render(messages=[{"role": r, "content": c} for r, c in messages]) == rendered
    last = [c for r, c in messages if r == "user"][-1]
    suffix = {"chat": f"{last}\n<|assistant|>\n", "multialpaca": re.sub("\n+", "\n", last) + "\n\n", "plain": last}
    assert rendered.endswith(suffix[template])


def _refused(messages: list[tuple[str, str]]) -> bool:
    """What `render_messages` must refuse: an unknown role, an assistant message with no user turn open, or a
    conversation that does not end with a user turn (system messages aside)."""
    open_turn = False
    for role, _ in messages:
        if role == "user":
            open_turn = True
        elif role == "assistant":
            if not open_turn:
                return True
            open_turn = False
        elif role not in ("system", "developer"):
            return True
    return not open_turn


@PROPERTY
@given(template=st.text(max_size=12), query=st.text(max_size=10))
def test_unknown_template_is_an_error(template, query):
    assume(template not in TEMPLATES)
    with pytest.raises(PolyLMError, match="unknown template"):
        render_prompt(template, query)
    with pytest.raises(PolyLMError, match="unknown template"):
        jinja_template(template)


# ---- tokenizer


@pytest.fixture(scope="module")
def nfkc_tokenizer(tmp_path_factory) -> Tokenizer:
    """The `nmt_nfkc` variant of conftest's corpus tokenizer: its round trip is the normalized text."""
    out = tmp_path_factory.mktemp("nfkc")
    config = TokenizerTrainingConfig(vocab_size=2000, normalization="nmt_nfkc")
    return train_tokenizer(sorted(EMBEDDED_CORPUS.glob("*.txt")), out, config)


@PROPERTY
@given(text=st.text())
def test_tokenizer_round_trips_any_unicode(corpus_tokenizer, text):
    """identity normalization with byte fallback: decode(encode(s)) is s, but for `▁`, SentencePiece's own
    space mark, which comes back a space."""
    ids = corpus_tokenizer.encode(text)
    assert all(0 <= i < corpus_tokenizer.vocab_size for i in ids)
    assert corpus_tokenizer.decode(ids) == text.replace("\u2581", " ")
    assert corpus_tokenizer.encode_batch([text, text]) == [ids, ids]


@PROPERTY
@given(text=st.text())
def test_nfkc_tokenizer_round_trips_to_the_normalized_text(nfkc_tokenizer, text):
    normalizer = spm.SentencePieceNormalizer(model_file=str(nfkc_tokenizer.model_file))
    normalized = normalizer.normalize(text).replace("\u2581", " ").removeprefix(" ")
    assert nfkc_tokenizer.decode(nfkc_tokenizer.encode(text)) == normalized


@PROPERTY
@given(ids=st.lists(st.integers(-(2**40), 2**40) | st.integers(0, 2100), max_size=30))
def test_tokenizer_decodes_any_ids(corpus_tokenizer, ids):
    """Any ids, out of range included (a padded embedding's extra rows, garbage): a string, never an error."""
    text = corpus_tokenizer.decode(ids)
    assert text == corpus_tokenizer.decode([i for i in ids if 0 <= i < corpus_tokenizer.vocab_size])
