"""The embedded default corpus, split for the demo: what trains, what is held out, and the files each stage reads.

`polylm/resources/corpus/<lang>.txt`: 60 line-aligned sentences in each of PolyLM's 18 languages (line i of every
file says the same thing), written for this project. `polylm/resources/instructions/<lang>.jsonl`: MultiAlpaca-style
records built from the training lines with instructions written in each language. The last `HELD_OUT` lines of every
language are never trained on: the demo measures perplexity and translation on them.
"""

from __future__ import annotations

from pathlib import Path

import yaml

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
CORPUS = RESOURCES / "corpus"
INSTRUCTIONS = RESOURCES / "instructions"
HELD_OUT = 6


def languages() -> list[str]:
    return sorted(path.stem for path in CORPUS.glob("*.txt"))


def _lines(lang: str) -> list[str]:
    return (CORPUS / f"{lang}.txt").read_text(encoding="utf-8").splitlines()


def held_out_lines(lang: str) -> list[str]:
    return _lines(lang)[-HELD_OUT:]


def write_training_text(out: Path) -> dict[str, Path]:
    """`out/<lang>.txt`: the training lines of every language (one document per line)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for lang in languages():
        paths[lang] = out / f"{lang}.txt"
        paths[lang].write_text("\n".join(_lines(lang)[:-HELD_OUT]) + "\n", encoding="utf-8")
    return paths


def data_config(
    text: dict[str, Path], out: Path, total_tokens: int, seq_len: int, curriculum: dict, tokenizer: dict | None = None
) -> Path:
    """The `polylm data prepare` YAML for the demo: every language's text, English↔X pairs from the aligned lines,
    a 10% held-out validation split, a small tokenizer (or `tokenizer`, e.g. {"path": DIR} to reuse one)."""
    sources = [{"name": lang, "lang": lang, "paths": [str(path)]} for lang, path in text.items()]
    pairs = [
        {"src_file": str(text[lang]), "tgt_file": str(text["en"]), "src_lang": lang, "tgt_lang": "en"}
        for lang in text
        if lang != "en"
    ]
    sources.append({"name": "pairs", "parallel": pairs})
    config = {
        "sources": sources,
        "pipeline": {"minhash_threshold": None, "quality": None},
        "tokenizer": tokenizer or {"vocab_size": 2000},
        "curriculum": {"total_tokens": total_tokens, "seq_len": seq_len, **curriculum},
        "validation_fraction": 0.1,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out


def write_flores(out: Path) -> Path:
    """The held-out lines as a FLORES-style folder (`flores/devtest/<code>.devtest`) for `polylm evaluate`."""
    from polylm.evaluate.tasks.translation import FLORES_CODES

    folder = out / "flores" / "devtest"
    folder.mkdir(parents=True, exist_ok=True)
    for lang in languages():
        code = FLORES_CODES[lang][0]
        (folder / f"{code}.devtest").write_text("\n".join(held_out_lines(lang)) + "\n", encoding="utf-8")
    return out
