"""Every config file, every level: a misspelled key or a value of the wrong type is one line naming the file and
the dotted key, exit status 1, no traceback. Each example config is damaged at each mapping and each value it
holds, and at each section its config class declares."""

from __future__ import annotations

import copy
import dataclasses
import re
import sys

import pytest
import yaml

from conftest import REPO
from polylm.cli import main
from polylm.data.prepare import DataConfig
from polylm.instruct.mixture import MixtureConfig
from polylm.train.config import FinetuneConfig, TrainConfig

# example file -> (the command that reads it, its config class)
EXAMPLES = {
    "data/curriculum.yaml": (["data", "prepare"], DataConfig),
    "instruct/chat-mixture.yaml": (["instruct", "prepare"], MixtureConfig),
    "instruct/multialpaca.yaml": (["instruct", "prepare"], MixtureConfig),
    "pretrain/tiny.yaml": (["pretrain"], TrainConfig),
    "pretrain/polylm-1.7b.yaml": (["pretrain"], TrainConfig),
    "pretrain/polylm-13b.yaml": (["pretrain"], TrainConfig),
    "finetune/multialpaca-tiny.yaml": (["finetune"], FinetuneConfig),
}
TYPO = "zzz_typo"


def _nodes(value: object, path: tuple = ()) -> list[tuple[tuple, object]]:
    """(key path, value) of every node of a YAML document, depth first."""
    found = [(path, value)]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _nodes(item, (*path, index))
    return found


def _sections(cls: type, path: tuple = ()) -> list[tuple]:
    """Key paths of the dataclass sections `cls` declares (not inside lists)."""
    found = []
    for f in dataclasses.fields(cls):
        section = vars(sys.modules[cls.__module__]).get(str(f.type).split(" |")[0])
        if isinstance(section, type) and dataclasses.is_dataclass(section):
            found += [(*path, f.name), *_sections(section, (*path, f.name))]
    return found


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _set(document: object, path: tuple, value: object) -> object:
    document = copy.deepcopy(document)
    node = document
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    node[path[-1]] = value
    return document


def _cases(name: str) -> list[tuple[str, object, str]]:
    """(case id, damaged document, the dotted key its error must name)."""
    _, cls = EXAMPLES[name]
    document = yaml.safe_load((REPO / "examples" / name).read_text(encoding="utf-8"))
    cases = []
    for path, value in _nodes(document):
        if isinstance(value, dict):
            cases.append((f"typo at {_dotted(path) or 'top'}", _set(document, (*path, TYPO), 1) if path else
                          {**document, TYPO: 1}, _dotted((*path, TYPO))))  # fmt: skip
        if path and path != ("preset",):
            wrong = [1, 2] if isinstance(value, dict) else {"x": 1}
            cases.append((f"wrong type at {_dotted(path)}", _set(document, path, wrong), _dotted(path)))
    for path in _sections(cls):
        if not any(p == path for p, _ in _nodes(document)):
            cases.append((f"typo in absent {_dotted(path)}", _set(document, (*path, TYPO), 1), _dotted((*path, TYPO))))
    return cases


ALL = [(name, *case) for name in EXAMPLES for case in _cases(name)]


@pytest.mark.parametrize(("name", "case", "document", "key"), ALL, ids=[f"{n}: {c}" for n, c, _, _ in ALL])
def test_a_damaged_config_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, name, case, document, key):
    command, _ = EXAMPLES[name]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert main([*command, "--config", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert re.match(rf"polylm: error: {re.escape(str(path))}: {re.escape(key)}[:\s.\[]", err), (case, err)
    assert not (tmp_path / "out").exists()
