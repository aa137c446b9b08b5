"""`polylm data prepare --format megatron`: Megatron-LM's indexed datasets, read back by a reader written here from
the documented layout (not from polylm's writer), hold exactly each document's token ids."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import EMBEDDED_CORPUS
from polylm.cli import main
from polylm.data.shards import ShardSet

pytestmark = pytest.mark.filterwarnings("ignore:curriculum. source")


def read_indexed_dataset(prefix: Path) -> list[np.ndarray]:
    """Megatron-Core's layout: magic, version, dtype code, counts, int32 lengths, int64 pointers, int64 doc index."""
    index = prefix.with_name(prefix.name + ".idx").read_bytes()
    assert index[:9] == b"MMIDIDX\x00\x00"
    version, code = struct.unpack_from("<QB", index, 9)
    assert (version, code) == (1, 4)  # int32 tokens
    sequences, documents = struct.unpack_from("<QQ", index, 18)
    assert documents == sequences + 1
    offset = 34
    lengths = np.frombuffer(index, "<i4", sequences, offset)
    pointers = np.frombuffer(index, "<i8", sequences, offset + 4 * sequences)
    doc_index = np.frombuffer(index, "<i8", documents, offset + 12 * sequences)
    assert len(index) == offset + 12 * sequences + 8 * documents
    assert np.array_equal(doc_index, np.arange(documents))
    data = prefix.with_name(prefix.name + ".bin").read_bytes()
    assert len(data) == 4 * int(lengths.sum())
    return [np.frombuffer(data, "<i4", int(n), int(p)) for n, p in zip(lengths, pointers, strict=True)]


def _config(tmp_path: Path) -> Path:
    sources = "\n".join(
        f'  - {{name: {lang}, lang: {lang}, paths: ["{EMBEDDED_CORPUS / (lang + ".txt")}"]}}' for lang in ("en", "ja")
    )
    de, en = EMBEDDED_CORPUS / "de.txt", EMBEDDED_CORPUS / "en.txt"
    pairs = f'[{{src_file: "{de}", tgt_file: "{en}", src_lang: de, tgt_lang: en}}]'
    config = tmp_path / "data.yaml"
    config.write_text(
        f"sources:\n{sources}\n  - {{name: pairs, parallel: {pairs}}}\ntokenizer: {{vocab_size: 1200}}\n"
        "curriculum: {total_tokens: 20000, seq_len: 64}\nvalidation_fraction: 0.2\n",
        encoding="utf-8",
    )
    return config


def test_megatron_files_hold_each_documents_tokens(tmp_path):
    out = tmp_path / "data"
    assert main(["data", "prepare", "--config", str(_config(tmp_path)), "--out", str(out), "--format", "megatron"]) == 0
    summary = json.loads((out / "data.json").read_text())
    for name in ("en", "ja", "pairs"):
        for folder, megatron in (("shards", "megatron"), ("validation", "megatron/validation")):
            if folder == "validation" and name == "pairs":
                assert not (out / megatron / f"{name}_text_document.idx").exists()
                continue
            shards = ShardSet(out / folder / name)
            documents = read_indexed_dataset(out / megatron / f"{name}_text_document")
            assert len(documents) == shards.num_documents > 0
            for number, tokens in enumerate(documents):
                assert np.array_equal(tokens, shards.document(number).astype(np.int64)), (name, number)
                assert tokens[-1] == summary["megatron"]["eod_id"] == 2
    blends = summary["megatron"]["data_path_per_stage"]
    assert set(blends) == {"stage1", "stage2"}
    for blend in blends.values():
        parts = blend.split()
        assert len(parts) == 6 and all(Path(p + ".bin").exists() for p in parts[1::2])
        assert abs(sum(map(float, parts[::2])) - 1) < 1e-4


def test_staged_run_writes_the_same_megatron_files(tmp_path):
    config = _config(tmp_path)
    inline, staged = tmp_path / "inline", tmp_path / "staged"
    assert main(["data", "prepare", "--config", str(config), "--out", str(inline), "--format", "megatron"]) == 0
    assert main(["data", "prepare", "--config", str(config), "--out", str(staged), "--format", "megatron",
                 "--executor", "local", "--tasks", "2", "--workers", "1"]) == 0  # fmt: skip
    files = sorted(p.relative_to(inline) for p in (inline / "megatron").rglob("*") if p.is_file())
    assert len(files) == 10
    for name in files:
        assert (inline / name).read_bytes() == (staged / name).read_bytes(), name


def test_unknown_format_is_one_line(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "prepare", "--config", str(_config(tmp_path)), "--out", str(out), "--format", "arrow"]) == 1
    assert "--format 'arrow' is not one of polylm, megatron" in capsys.readouterr().err
    assert not out.exists()
