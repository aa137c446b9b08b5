"""The README's "Using it" commands still work as written: every one parses with today's flags (the ones that
need a hub download or the full corpora are parsed only), and those that run offline in seconds are run."""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import EMBEDDED_CORPUS, REPO
from polylm.cli import build_parser, main


def _using_it_commands() -> list[str]:
    section = REPO.joinpath("README.md").read_text(encoding="utf-8").split("## Using it", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines() if line.strip().startswith("polylm")]


COMMANDS = _using_it_commands()


def test_the_section_is_found():
    assert len(COMMANDS) >= 15 and all(command.startswith("polylm ") for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_parses_with_todays_flags(command):
    argv = shlex.split(command.replace("$'", "'"))[1:]
    args = build_parser().parse_args(argv)
    assert callable(args.run)


def test_the_offline_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    for lang in ("en", "zh", "th"):
        (data / f"{lang}.txt").write_text((EMBEDDED_CORPUS / f"{lang}.txt").read_text(encoding="utf-8"))
    ran = 0
    for command in COMMANDS:
        argv = shlex.split(command)[1:]
        if argv[0] == "tokenizer" and argv[1] == "train":
            argv[argv.index("--vocab-size") + 1] = "2000"  # the embedded corpus is small
        elif argv[0] == "tokenizer" and argv[1] == "stats":
            argv = [*argv[: argv.index("--input") + 1], *map(str, sorted(data.glob("*.txt")))]
        elif argv[0] not in ("info", "init") and not (argv[0] == "generate" and "tiny-model/" in argv):
            continue
        assert main(argv) == 0, command
        ran += 1
    assert ran == 5
    assert "13,906,790,400" in capsys.readouterr().out
