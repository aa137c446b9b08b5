"""Token shards: exact round trip, same bytes for any worker count, atomic writes, refusal of damaged shards."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import EMBEDDED_CORPUS
from polylm.data.documents import Document
from polylm.data.shards import ShardSet, merge_shards, tokenizer_sha256, write_shards
from polylm.errors import PolyLMError
from polylm.tokenizer import Tokenizer


def corpus_documents(lines_per_doc: int = 3) -> list[Document]:
    """The embedded corpus as documents of a few lines, language by language, plus one long English document."""
    docs = []
    for path in sorted(EMBEDDED_CORPUS.glob("*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for start in range(0, len(lines), lines_per_doc):
            text = "\n".join(lines[start : start + lines_per_doc])
            docs.append(Document(text, path.stem, f"web-{path.stem}", f"corpus/{path.name}:{start + 1}"))
    english = (EMBEDDED_CORPUS / "en.txt").read_text(encoding="utf-8")
    docs.append(Document(english, "en", "books", "corpus/en.txt"))
    return docs


def all_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture(scope="module")
def written(corpus_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "web"
    tokenizer_dir = corpus_tokenizer.model_file.parent
    write_shards(corpus_documents(), tokenizer_dir, out, batch_docs=16, shard_tokens=1000, progress=False)
    return out


def test_round_trip(written: Path, corpus_tokenizer: Tokenizer) -> None:
    docs = corpus_documents()
    expected = [[*corpus_tokenizer.encode(doc.text), corpus_tokenizer.eos_id] for doc in docs]
    shards = ShardSet(written, tokenizer_sha256(corpus_tokenizer.model_file.parent), verify=True)
    assert shards.num_documents == len(docs) and shards.num_tokens == sum(map(len, expected))
    for index, (doc, tokens) in enumerate(zip(docs, expected, strict=True)):
        got = shards.document(index)
        assert got.dtype == np.uint32 and got.tolist() == tokens, doc.id
        assert shards.document_id(index) == doc.id
    assert shards.doc_lengths().tolist() == [len(tokens) for tokens in expected]
    assert shards.doc_languages() == [doc.lang for doc in docs]
    meta = shards.metadata
    assert meta["languages"] == list(dict.fromkeys(doc.lang for doc in docs))
    assert meta["sources"] == list(dict.fromkeys(doc.source for doc in docs))
    assert meta["text_bytes"] == sum(len(doc.text.encode("utf-8")) for doc in docs)
    assert meta["eos_id"] == corpus_tokenizer.eos_id and meta["vocab_size"] == corpus_tokenizer.vocab_size
    with pytest.raises(IndexError):
        shards.document(len(docs))


def test_documents_never_span_shards(written: Path, corpus_tokenizer: Tokenizer) -> None:
    meta = json.loads((written / "metadata.json").read_text(encoding="utf-8"))
    assert len(meta["shards"]) > 10
    first = 0
    docs = corpus_documents()
    for shard in meta["shards"]:
        tokens = np.fromfile(written / f"{shard['name']}.bin", dtype="<u4")
        offsets = np.fromfile(written / f"{shard['name']}.idx", dtype="<u8")
        assert len(tokens) == shard["tokens"] and len(offsets) == shard["documents"] + 1
        assert shard["tokens"] <= 1000 or shard["documents"] == 1  # only a document longer than a shard overflows
        for local in range(shard["documents"]):
            text = docs[first + local].text
            assert tokens[offsets[local] : offsets[local + 1]].tolist() == [
                *corpus_tokenizer.encode(text),
                corpus_tokenizer.eos_id,
            ]
        first += shard["documents"]
    assert first == len(docs)
    assert meta["shards"][-1]["tokens"] > 1000  # the long document, alone


def test_one_and_two_workers_write_identical_bytes(written: Path, corpus_tokenizer: Tokenizer, tmp_path: Path) -> None:
    out = tmp_path / "web"
    docs = corpus_documents()
    write_shards(iter(docs), corpus_tokenizer.model_file.parent, out, workers=2, batch_docs=16, shard_tokens=1000)
    assert all_bytes(out) == all_bytes(written)


def test_merged_pieces_equal_one_pass(written: Path, corpus_tokenizer: Tokenizer, tmp_path: Path) -> None:
    """Pieces cut at arbitrary documents (so output shards straddle them) join into the one-pass bytes."""
    docs, cuts = corpus_documents(), [0, 1, 7, 40, 41, 90]
    cuts.append(len(docs))
    pieces = []
    for number, (start, end) in enumerate(itertools.pairwise(cuts)):
        piece = tmp_path / f"piece-{number}"
        write_shards(docs[start:end], corpus_tokenizer.model_file.parent, piece, shard_tokens=300, progress=False)
        pieces.append(ShardSet(piece))
    assert any(len(piece.metadata["shards"]) > 1 for piece in pieces)
    merge_shards(pieces, tmp_path / "web", shard_tokens=1000)
    assert all_bytes(tmp_path / "web") == all_bytes(written)


def test_blocks_give_every_document_in_order(written: Path) -> None:
    shards = ShardSet(written)
    found, ids, langs = [], [], []
    for tokens, lengths, languages, block_ids in shards.blocks(max_tokens=50):
        assert len(tokens) <= 50 or len(lengths) == 1  # only a document longer than a block stands alone
        found += np.split(tokens, np.cumsum(lengths)[:-1])
        ids += block_ids
        langs += languages
    assert len(found) == shards.num_documents
    assert all(np.array_equal(found[i], shards.document(i)) for i in range(shards.num_documents))
    assert ids == [shards.document_id(i) for i in range(shards.num_documents)]
    assert langs == shards.doc_languages()


def failing(docs: list[Document], after: int) -> Iterator[Document]:
    yield from docs[:after]
    raise RuntimeError("reader failed")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_write_leaves_the_previous_directory(
    written: Path, corpus_tokenizer: Tokenizer, tmp_path: Path, workers: int
) -> None:
    out = tmp_path / "web"
    shutil.copytree(written, out)
    before = all_bytes(out)
    fresh = tmp_path / "fresh"
    for target in (out, fresh):
        with pytest.raises(RuntimeError, match="reader failed"):
            write_shards(
                failing(corpus_documents(), 150),
                corpus_tokenizer.model_file.parent,
                target,
                workers=workers,
                batch_docs=16,
                shard_tokens=1000,
                progress=False,
            )
        assert leftovers(target) == []
    assert all_bytes(out) == before
    assert not fresh.exists()


def test_rewrite_replaces_and_leaves_nothing_behind(corpus_tokenizer: Tokenizer, tmp_path: Path) -> None:
    out = tmp_path / "web"
    docs = corpus_documents()
    write_shards(docs[:10], corpus_tokenizer.model_file.parent, out, progress=False)
    first = ShardSet(out).fingerprint
    write_shards(docs[10:30], corpus_tokenizer.model_file.parent, out, progress=False)
    assert ShardSet(out).num_documents == 20 and leftovers(out) == []
    assert ShardSet(out).fingerprint != first
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(PolyLMError, match="notes: exists and is not a shard directory"):
        write_shards(docs, corpus_tokenizer.model_file.parent, precious, progress=False)
    assert (precious / "todo.txt").read_text() == "keep me"


def test_more_than_256_languages_are_refused(corpus_tokenizer: Tokenizer, tmp_path: Path) -> None:
    docs = [Document("hi", f"x{i}", "s", f"doc{i}") for i in range(257)]
    with pytest.raises(PolyLMError, match="doc256: language 'x256'"):
        write_shards(docs, corpus_tokenizer.model_file.parent, tmp_path / "many", progress=False)
    assert not (tmp_path / "many").exists()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-4])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def set_format(path: Path) -> None:
    meta = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**meta, "format": "megatron-indexed"}), encoding="utf-8")


DAMAGE: dict[str, tuple[str, Callable[[Path], None], dict]] = {
    "truncated bin": ("shard-00003.bin", truncate, {}),
    "truncated idx": ("shard-00003.idx", truncate, {}),
    "short lang": ("shard-00003.lang", truncate, {}),
    "missing idx": ("shard-00003.idx", Path.unlink, {}),
    "foreign format": ("metadata.json", set_format, {}),
    "missing metadata": ("metadata.json", Path.unlink, {}),
    "other tokenizer": ("metadata.json", lambda path: None, {"tokenizer_sha256": "0" * 64}),
    "flipped byte": ("shard-00003.bin", flip_byte, {"verify": True}),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_shards_are_refused_naming_the_file(written: Path, tmp_path: Path, case: str) -> None:
    name, damage, options = DAMAGE[case]
    copy = tmp_path / "copy"
    shutil.copytree(written, copy)
    damage(copy / name)
    with pytest.raises(PolyLMError, match=f"{copy / name}: "):
        ShardSet(copy, **options)


@pytest.mark.parametrize("workers", [1, 2])
def test_writer_streams_its_input(corpus_tokenizer: Tokenizer, tmp_path: Path, workers: int) -> None:
    """Some MB of text: while the reader is still being read, all but a few batches are already on disk."""
    base = corpus_documents(lines_per_doc=20)
    docs = [Document(d.text, d.lang, d.source, f"{d.id}#{r}") for r in range(24) for d in base]
    text_mb = sum(len(d.text.encode("utf-8")) for d in docs) / 1e6
    assert text_mb > 3
    lengths = np.array([len(ids) + 1 for ids in corpus_tokenizer.sp.encode([d.text for d in docs])])
    done_before = np.concatenate([[0], np.cumsum(lengths)])
    out, batch_docs = tmp_path / "big", 8
    bin_file = out.parent / f".{out.name}.tmp-{os.getpid()}" / "shard-00000.bin"
    lag_docs = (2 * workers + 2) * batch_docs  # in flight: the window of batches, plus the one being read
    lags = []

    def reader() -> Iterator[Document]:
        for index, doc in enumerate(docs):
            on_disk = bin_file.stat().st_size // 4 if bin_file.exists() else 0
            must_be_written = done_before[max(index - lag_docs, 0)]
            lags.append(must_be_written - on_disk)
            yield doc

    write_shards(reader(), corpus_tokenizer.model_file.parent, out, workers=workers, batch_docs=batch_docs)
    assert ShardSet(out).num_tokens == done_before[-1]
    # A buffered writer may hold back one buffer's worth: 64 KiB is far below the MBs a non-streaming writer lags.
    assert max(lags) <= (64 << 10) // 4, max(lags)
