"""Readers: every format and compression, every input problem counted with FILE:LINE, config mistakes raised."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from polylm.data.documents import Ledger
from polylm.data.readers import CHUNK_BYTES, Pair, read_documents, read_pairs
from polylm.errors import PolyLMError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CORPORA = SHARED_DATA / "corpora"
needs_corpora = pytest.mark.skipif(not CORPORA.is_dir(), reason="../shared/data/corpora is absent")

TEXTS = ["Hello world.", "Zweiter Satz, mit Umlauten: äöü.", "第三个文档。"]


def write(path: Path, data: bytes) -> Path:
    """Write raw bytes, compressed as the suffix says."""
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def jsonl(records: list[object]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def read(path: Path, lang: str = "en", **kwargs) -> tuple[list, Ledger]:
    ledger = Ledger()
    return list(read_documents(path, lang, "src", ledger, **kwargs)), ledger


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.jsonl.gz", "d.jsonl.zst", "d.JSONL"])
def test_jsonl_formats(tmp_path, name):
    path = write(tmp_path / name, jsonl([{"text": t, "meta": 1} for t in TEXTS]))
    docs, ledger = read(path)
    assert [d.text for d in docs] == TEXTS
    assert [d.id for d in docs] == [f"{path}:{n}" for n in (1, 2, 3)]
    assert {(d.lang, d.source) for d in docs} == {("en", "src")}
    assert ledger.read == {"src": 3} and not ledger.errors


@pytest.mark.parametrize("name", ["d.txt", "d.txt.gz", "d.txt.zst"])
def test_txt_lines_and_paragraphs(tmp_path, name):
    path = write(tmp_path / name, "\ufeffone\r\n\n  \ntwo a\ntwo b\n\n\nthree".encode())
    docs, ledger = read(path)
    assert [(d.text, d.id) for d in docs] == [
        (t, f"{path}:{n}") for t, n in [("one", 1), ("two a", 4), ("two b", 5)]
    ] + [("three", f"{path}:8")]
    docs, _ = read(path, text_mode="paragraph")
    assert [(d.text, d.id) for d in docs] == [
        ("one", f"{path}:1"),
        ("two a\ntwo b", f"{path}:4"),
        ("three", f"{path}:8"),
    ]
    assert ledger.read["src"] == 4


def test_text_field_and_language_outside_polylm(tmp_path):
    path = write(tmp_path / "d.jsonl", jsonl([{"content": "Habari ya asubuhi."}]))
    docs, _ = read(path, lang="sw", text_field="content")
    assert [(d.text, d.lang) for d in docs] == [("Habari ya asubuhi.", "sw")]


def test_parquet_in_batches(tmp_path):
    path = tmp_path / "d.parquet"
    texts = [f"row {i}" for i in range(2500)] + [None, "last"]
    pq.write_table(pa.table({"text": texts, "n": range(len(texts))}), path, row_group_size=700)
    docs, ledger = read(path)
    assert [d.text for d in docs] == [t for t in texts if t is not None]
    assert docs[0].id == f"{path}:1" and docs[-1].id == f"{path}:2502"
    assert ledger.errors == {"missing_field": 1}
    assert ledger.error_examples == [f"{path}:2501: no 'text' field (null)"]


def test_parquet_mistakes_raise(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": ["x"], "n": [1]}), path)
    with pytest.raises(PolyLMError, match=rf"{path}: no column 'text' \(columns: body, n\)"):
        read_documents(path, "en", "src", Ledger())
    with pytest.raises(PolyLMError, match="column 'n' has type int64"):
        read_documents(path, "en", "src", Ledger(), text_field="n")
    bad = write(tmp_path / "bad.parquet", b"not parquet")
    with pytest.raises(PolyLMError, match=f"{bad}: not a readable Parquet file"):
        read_documents(bad, "en", "src", Ledger())


def test_lines_longer_than_a_chunk_and_many_zstd_frames(tmp_path):
    long = "x" * (CHUNK_BYTES * 2 + 17)
    frames = [zstandard.ZstdCompressor().compress(f"{t}\n".encode()) for t in ("a first", long, "a third")]
    path = tmp_path / "d.txt.zst"
    path.write_bytes(b"".join(frames))
    docs, ledger = read(path)
    assert [d.text for d in docs] == ["a first", long, "a third"] and not ledger.errors


@pytest.mark.parametrize(
    ("kind", "content", "message"),
    [
        ("invalid_utf8", b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', "{path}:2: not valid UTF-8 (byte 10)"),
        (
            "malformed_json",
            b'{"text": "ok"}\n{"text": \n',
            "{path}:2: not a JSON object (Expecting value at column 10)",
        ),
        ("malformed_json", b'{"text": "ok"}\n["text"]\n', "{path}:2: not a JSON object (got list)"),
        ("missing_field", b'{"text": "ok"}\n{"body": "x"}\n', "{path}:2: no 'text' field"),
        ("missing_field", b'{"text": "ok"}\n{"text": 3}\n', "{path}:2: no 'text' field (got int, expected a string)"),
    ],
)
def test_bad_lines_are_counted_and_skipped(tmp_path, kind, content, message):
    path = write(tmp_path / "d.jsonl", content + b'{"text": "after"}\n')
    docs, ledger = read(path)
    assert [d.text for d in docs] == ["ok", "after"]
    assert ledger.errors == {kind: 1}
    assert ledger.error_examples == [message.format(path=path)]


def test_invalid_utf8_in_plain_text(tmp_path):
    path = write(tmp_path / "d.txt.gz", b"good\nbad \xc3\x28 byte\nalso good\n")
    docs, ledger = read(path)
    assert [d.text for d in docs] == ["good", "also good"]
    assert ledger.error_examples == [f"{path}:2: not valid UTF-8 (byte 4)"]


@pytest.mark.parametrize("name", ["e.txt", "e.jsonl", "e.txt.gz", "e.jsonl.zst"])
def test_empty_file(tmp_path, name):
    path = write(tmp_path / name, b"\n  \n")
    docs, ledger = read(path)
    assert docs == [] and ledger.errors == {"empty_file": 1}
    assert ledger.error_examples == [f"{path}: no documents"]


def test_empty_parquet(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    assert read(path)[1].error_examples == [f"{path}: no documents"]


@pytest.mark.parametrize("name", ["t.txt.gz", "t.txt.zst"])
def test_truncated_compressed_stream(tmp_path, name):
    data = "".join(f"line {i}\n" for i in range(20000)).encode()
    full = write(tmp_path / name, data)
    path = tmp_path / f"cut-{name}"
    path.write_bytes(full.read_bytes()[:-40])
    docs, ledger = read(path)
    assert 0 < len(docs) < 20000
    assert ledger.errors == {"corrupt_file": 1}
    assert ledger.error_examples[0].startswith(f"{path}:{len(docs) + 1}: compressed stream is corrupt or truncated")
    path.write_bytes(b"not compressed at all\n")
    assert read(path)[1].errors == {"corrupt_file": 1, "empty_file": 1}


@pytest.mark.parametrize(
    ("name", "lang", "kwargs", "message"),
    [
        ("missing.jsonl", "en", {}, "{path}: file not found"),
        ("d.csv", "en", {}, "{path}: unsupported format '.csv'"),
        ("d.parquet.gz", "en", {}, "{path}: unsupported format '.parquet.gz'"),
        ("README", "en", {}, "{path}: unsupported format '(no suffix)'"),
        ("d.txt", "EN", {}, "{path}: language 'EN' is not an ISO 639-1 code"),
        ("d.txt", "eng", {}, "{path}: language 'eng' is not an ISO 639-1 code"),
        ("d.txt", "en", {"text_mode": "sentence"}, "{path}: text_mode 'sentence' is not one of line, paragraph"),
    ],
)
def test_config_mistakes_raise_at_the_call(tmp_path, name, lang, kwargs, message):
    path = tmp_path / name
    if name != "missing.jsonl":
        path.write_text("x\n")
    with pytest.raises(PolyLMError) as info:
        read_documents(path, lang, "src", Ledger(), **kwargs)  # no iteration needed
    assert str(info.value).startswith(message.format(path=path))


@needs_corpora
def test_real_leipzig_and_udhr():
    docs, ledger = read(CORPORA / "leipzig_sentences" / "th.txt", "th")
    assert len(docs) == 1000 and not ledger.errors
    docs, ledger = read(CORPORA / "udhr" / "txt" / "eng.txt", text_mode="paragraph")
    assert 50 < len(docs) < 100 and any(d.text.strip().startswith("Article 1") for d in docs) and not ledger.errors


# ---- parallel data


def pairs(ledger: Ledger | None = None, **kwargs) -> list[Pair]:
    return list(read_pairs("par", ledger if ledger is not None else Ledger(), **kwargs))


@pytest.mark.parametrize("name", ["p.tsv", "p.tsv.gz", "p.txt.zst"])
def test_tsv_pairs(tmp_path, name):
    path = write(tmp_path / name, b"Hello.\tHallo.\n\nGood night.\tGute Nacht.\n")
    ledger = Ledger()
    got = pairs(ledger, tsv=path, src_lang="en", tgt_lang="de")
    assert got == [
        Pair("Hello.", "Hallo.", "en", "de", "par", f"{path}:1"),
        Pair("Good night.", "Gute Nacht.", "en", "de", "par", f"{path}:3"),
    ]
    assert ledger.read == {"par": 2} and not ledger.errors


def test_tsv_problems(tmp_path):
    path = write(tmp_path / "p.tsv", b"a\tb\nno tab here\na\tb\tc\n \tonly target\nsource\t\n\xff\tx\nlast\tone\n")
    ledger = Ledger()
    got = pairs(ledger, tsv=path, src_lang="en", tgt_lang="fr")
    assert [(p.src, p.tgt) for p in got] == [("a", "b"), ("last", "one")]
    assert ledger.errors == {"malformed_tsv": 2, "empty_side": 2, "invalid_utf8": 1}
    assert ledger.error_examples == [
        f"{path}:2: expected 2 tab-separated fields, got 1",
        f"{path}:3: expected 2 tab-separated fields, got 3",
        f"{path}:4: empty src side",
        f"{path}:5: empty tgt side",
        f"{path}:6: not valid UTF-8 (byte 0)",
    ]


@pytest.mark.parametrize("name", ["p.jsonl", "p.jsonl.zst"])
def test_jsonl_pairs_with_per_record_languages(tmp_path, name):
    records = [
        {"src": "Bonjour.", "tgt": "Hello.", "src_lang": "fr", "tgt_lang": "en"},
        {"src": "你好。", "tgt": "Hello.", "src_lang": "zh"},
        {"src": "Hola.", "tgt": "Hello.", "src_lang": "Spanish", "tgt_lang": "en"},
        {"src": "Ciao.", "tgt": "Hello.", "src_lang": None, "tgt_lang": "en"},
        {"src": "Hallo.", "tgt_lang": "en", "src_lang": "de"},
        {"src": "  ", "tgt": "Hello.", "src_lang": "de", "tgt_lang": "en"},
    ]
    path = write(tmp_path / name, jsonl(records) + b"not json\n")
    ledger = Ledger()
    got = pairs(ledger, jsonl=path, tgt_lang="en")
    assert [(p.src, p.src_lang, p.tgt_lang, p.id) for p in got] == [
        ("Bonjour.", "fr", "en", f"{path}:1"),
        ("你好。", "zh", "en", f"{path}:2"),  # the declared tgt_lang fills in
    ]
    assert ledger.errors == {"unknown_language": 2, "missing_field": 1, "empty_side": 1, "malformed_json": 1}
    assert ledger.error_examples[:3] == [
        f"{path}:3: src_lang 'Spanish' is not an ISO 639-1 code (two lowercase letters)",
        f"{path}:4: src_lang None is not an ISO 639-1 code (two lowercase letters)",
        f"{path}:5: no 'tgt' field",
    ]
    assert ledger.error_examples[3:] == [
        f"{path}:6: empty src side",
        f"{path}:7: not a JSON object (Expecting value at column 1)",
    ]


def test_jsonl_pairs_without_any_language(tmp_path):
    path = write(tmp_path / "p.jsonl", jsonl([{"src": "a", "tgt": "b"}]))
    ledger = Ledger()
    assert pairs(ledger, jsonl=path) == []
    assert ledger.errors == {"unknown_language": 2, "empty_file": 1}


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
def test_aligned_files(tmp_path, suffix):
    src = write(tmp_path / f"corpus.ja-en.ja{suffix}", "猫です。\n\n犬です。\n".encode())
    tgt = write(tmp_path / f"corpus.ja-en.en{suffix}", b"It is a cat.\nEmpty source.\nIt is a dog.\n")
    ledger = Ledger()
    got = pairs(ledger, src_file=src, tgt_file=tgt, src_lang="ja", tgt_lang="en")
    assert [(p.src, p.tgt, p.id) for p in got] == [
        ("猫です。", "It is a cat.", f"{src}:1"),
        ("犬です。", "It is a dog.", f"{src}:3"),
    ]
    assert ledger.error_examples == [f"{src}:2 / {tgt}:2: empty src side"]


@pytest.mark.parametrize("longer", ["src", "tgt"])
def test_misaligned_files_stop_at_the_shorter_one(tmp_path, longer):
    lines = {"src": b"a\nb\nc\n", "tgt": b"A\nB\n"} if longer == "src" else {"src": b"a\nb\n", "tgt": b"A\nB\nC\nD\n"}
    src, tgt = write(tmp_path / "s.txt", lines["src"]), write(tmp_path / "t.txt", lines["tgt"])
    ledger = Ledger()
    assert [p.src for p in pairs(ledger, src_file=src, tgt_file=tgt, src_lang="en", tgt_lang="de")] == ["a", "b"]
    ended, other = (tgt, src) if longer == "src" else (src, tgt)
    assert ledger.errors == {"misaligned": 1}
    assert ledger.error_examples == [f"{src} and {tgt}: {ended} ends before line 3, {other} goes on"]


def test_invalid_utf8_in_aligned_files_skips_the_pair(tmp_path):
    src, tgt = write(tmp_path / "s.txt", b"a\n\xffb\nc\n"), write(tmp_path / "t.txt", b"A\nB\nC\n")
    ledger = Ledger()
    assert [p.src for p in pairs(ledger, src_file=src, tgt_file=tgt, src_lang="en", tgt_lang="de")] == ["a", "c"]
    assert ledger.error_examples == [f"{src}:2: not valid UTF-8 (byte 0)"]


def test_empty_parallel_files(tmp_path):
    src, tgt = write(tmp_path / "s.txt", b""), write(tmp_path / "t.txt", b"")
    ledger = Ledger()
    assert pairs(ledger, src_file=src, tgt_file=tgt, src_lang="en", tgt_lang="de") == []
    assert ledger.error_examples == [f"{src} and {tgt}: no pairs"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "source 'par': a parallel entry needs exactly one of tsv, jsonl, or src_file + tgt_file"),
        ({"tsv": "T", "jsonl": "J"}, "needs exactly one of"),
        ({"src_file": "S"}, "needs exactly one of"),
        ({"tsv": "T", "src_file": "S", "tgt_file": "T"}, "needs exactly one of"),
        ({"tsv": "T", "src_lang": "en"}, "src_lang and tgt_lang are required"),
        ({"tsv": "T", "src_lang": "en", "tgt_lang": "German"}, "language 'German' is not an ISO 639-1 code"),
        ({"jsonl": "J", "src_lang": "xxx"}, "language 'xxx' is not an ISO 639-1 code"),
        ({"tsv": "missing.tsv", "src_lang": "en", "tgt_lang": "de"}, "missing.tsv: file not found"),
    ],
)
def test_parallel_config_mistakes_raise(tmp_path, kwargs, message):
    for name in ("T", "J", "S"):
        (tmp_path / name).write_text("a\tb\n")
    kwargs = {k: (tmp_path / v if k in ("tsv", "jsonl", "src_file", "tgt_file") else v) for k, v in kwargs.items()}
    with pytest.raises(PolyLMError, match=re.escape(message)):
        read_pairs("par", Ledger(), **kwargs)


@needs_corpora
def test_real_tatoeba_aligned_files():
    folder = CORPORA / "tatoeba_laser_v1"
    ledger = Ledger()
    got = pairs(
        ledger,
        src_file=folder / "tatoeba.jpn-eng.jpn",
        tgt_file=folder / "tatoeba.jpn-eng.eng",
        src_lang="ja",
        tgt_lang="en",
    )
    assert len(got) == 1000 and not ledger.errors
    assert got[0].id == f"{folder / 'tatoeba.jpn-eng.jpn'}:1" and got[0].src and got[0].tgt.isascii()
