"""Tokenized shards of one source: the curriculum sampler's input, written once, reproducibly, and checked on open.

A shard directory (every number little-endian):

    metadata.json           format, version, tokenizer sha256, counts, languages, sources, each shard's sha256
    shard-NNNNN.bin         uint32 tokens: each document's SentencePiece ids (no BOS), then `</s>`, the document
                            separator Megatron appends; a document never spans two shards
    shard-NNNNN.idx         uint64 offset of each document's first token, plus the end (documents + 1 values)
    shard-NNNNN.lang        uint8 per document: its index in metadata `languages`
    shard-NNNNN.ids.jsonl   each document's id as a JSON string, one a line, to trace a sample back to its input

uint32 because a 256K vocabulary overflows the uint16 of nanoGPT's and OLMo's defaults. The documents keep their
input order whatever the number of workers, so the bytes are the same (OLMo treats data order as an artifact),
and the directory only ever appears complete: it is written beside `out_dir` and renamed into place.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import multiprocessing
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from json.encoder import encode_basestring
from pathlib import Path
from typing import BinaryIO, TextIO

import numpy as np

from polylm.data.documents import Document
from polylm.durable import close_synced, fsync_dir, replace_dir, write_bytes
from polylm.errors import PolyLMError
from polylm.progress import progress_bar
from polylm.tokenizer import TOKENIZER_FILE, Tokenizer

FORMAT = "polylm-token-shards"
VERSION = 1
METADATA_FILE = "metadata.json"
TOKEN_DTYPE = np.dtype("<u4")
OFFSET_DTYPE = np.dtype("<u8")
MAX_LANGUAGES = 256
"""Languages a directory can hold: the `.lang` files store one uint8 per document."""
BATCH_CHARS = 1 << 24
"""A batch also ends at this many characters, so a run of very long documents cannot flood memory."""

Encoded = tuple[np.ndarray, np.ndarray, int]
"""A batch's tokens (uint32, `</s>` after each document), token count per document, and UTF-8 bytes of text."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_sha256(tokenizer_dir: str | Path) -> str:
    """sha256 of `tokenizer.model` (given its directory or the file): shards are only valid for that exact model."""
    path = Path(tokenizer_dir)
    path = path / TOKENIZER_FILE if path.is_dir() else path
    try:
        return _file_sha256(path)
    except FileNotFoundError:
        raise PolyLMError(f"{path}: SentencePiece tokenizer model not found") from None


class _Encoder:
    """Turns a batch of texts into one flat token array, in-process or in a pool worker."""

    def __init__(self, tokenizer: Tokenizer, num_threads: int) -> None:
        self.sp = tokenizer.sp
        self.num_threads = num_threads
        self.eos = np.array([self.sp.eos_id()], dtype=np.int32)
        # sentencepiece >= 0.2.2 hands back int32 arrays: no Python int per token to build and then convert.
        self.numpy_out = "return_type" in inspect.signature(self.sp.encode).parameters

    def __call__(self, texts: list[str]) -> Encoded:
        if self.numpy_out:
            arrays = self.sp.encode(texts, num_threads=self.num_threads, return_type="numpy")
        else:
            arrays = [np.asarray(ids, dtype=np.int32) for ids in self.sp.encode(texts, num_threads=self.num_threads)]
        lengths = np.fromiter((len(ids) + 1 for ids in arrays), dtype=np.int64, count=len(arrays))
        tokens = np.concatenate([part for ids in arrays for part in (ids, self.eos)]).astype(TOKEN_DTYPE)
        return tokens, lengths, sum(len(text.encode("utf-8")) for text in texts)


_worker_encoder: _Encoder | None = None


def _init_worker(model_file: str) -> None:
    """Pool initializer: each worker loads the tokenizer once (nothing is inherited under spawn)."""
    global _worker_encoder
    # One thread per worker: the pool is the parallelism, sentencepiece's own threads would only compete.
    _worker_encoder = _Encoder(Tokenizer(model_file), num_threads=1)


def _encode_in_worker(texts: list[str]) -> Encoded:
    assert _worker_encoder is not None, "_init_worker did not run"
    return _worker_encoder(texts)


def _batches(docs: Iterable[Document], batch_docs: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc.text)
        if len(batch) >= batch_docs or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _encoded(
    docs: Iterable[Document], tokenizer: Tokenizer, workers: int, batch_docs: int
) -> Iterator[tuple[list[Document], Encoded]]:
    """Encoded batches in input order; with a pool, at most 2 batches per worker are in flight.

    `Pool.imap` would give the order too, but it keeps feeding workers while its results pile up unread (with a
    stalled reader it took 6,607 of 10,000 inputs in 3 s); a window of `apply_async` results bounds both.
    """
    if workers == 1:
        encode = _Encoder(tokenizer, num_threads=-1)  # -1: sentencepiece threads the batch over all cores
        for batch in _batches(docs, batch_docs):
            yield batch, encode([doc.text for doc in batch])
        return
    context = multiprocessing.get_context("spawn")  # fork with live threads (tqdm, torch) can deadlock a child
    with context.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer.model_file),)) as pool:
        pending: deque = deque()
        for batch in _batches(docs, batch_docs):
            pending.append((batch, pool.apply_async(_encode_in_worker, ([doc.text for doc in batch],))))
            if len(pending) >= 2 * workers:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()


class _ShardWriter:
    """Appends encoded batches to the shard files of `directory`, starting a new shard before one would overflow."""

    def __init__(self, directory: Path, shard_tokens: int) -> None:
        self.directory, self.shard_tokens = directory, shard_tokens
        self.languages: dict[str, int] = {}
        self.sources: dict[str, None] = {}  # an ordered set
        self.shards: list[dict] = []
        self.text_bytes = 0
        self._bin: BinaryIO | None = None
        self._ids: TextIO | None = None

    def _open(self) -> None:
        self._name = f"shard-{len(self.shards):05d}"
        self._bin = (self.directory / f"{self._name}.bin").open("wb")
        self._ids = (self.directory / f"{self._name}.ids.jsonl").open("w", encoding="utf-8")
        self._digest = hashlib.sha256()
        self._lengths: list[np.ndarray] = []
        self._codes: list[np.ndarray] = []
        self._tokens = 0

    def _close(self) -> None:
        assert self._bin is not None and self._ids is not None
        close_synced(self._bin)
        close_synced(self._ids)
        self._bin = self._ids = None
        lengths = np.concatenate(self._lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(OFFSET_DTYPE)
        for suffix, array in ((".idx", offsets), (".lang", np.concatenate(self._codes))):
            write_bytes(self.directory / f"{self._name}{suffix}", array.tobytes())
        self.shards.append(
            {"name": self._name, "documents": len(lengths), "tokens": self._tokens, "sha256": self._digest.hexdigest()}
        )

    def _language(self, lang: str, doc_id: str) -> int:
        code = self.languages.get(lang)
        if code is None:
            if len(self.languages) == MAX_LANGUAGES:
                raise PolyLMError(f"{doc_id}: language {lang!r} is one more than a shard set's {MAX_LANGUAGES}")
            code = self.languages[lang] = len(self.languages)
        return code

    def add(self, docs: list[Document], encoded: Encoded) -> None:
        self.add_tokens([doc.id for doc in docs], [doc.lang for doc in docs], [doc.source for doc in docs], encoded)

    def add_tokens(self, ids: list[str], langs: list[str], sources: list[str], encoded: Encoded) -> None:
        """Append documents given by id and language, with their tokens already encoded; `sources`: the names of
        their sources in order of first appearance (repeats allowed)."""
        tokens, lengths, text_bytes = encoded
        codes = np.array([self._language(lang, doc_id) for lang, doc_id in zip(langs, ids, strict=True)], np.uint8)
        self.sources.update(dict.fromkeys(sources))
        self.text_bytes += text_bytes
        ends = np.cumsum(lengths)
        first = 0
        while first < len(ids):
            if self._bin is None:
                self._open()
            start = int(ends[first - 1]) if first else 0
            last = int(np.searchsorted(ends, start + self.shard_tokens - self._tokens, side="right"))
            if last == first:  # the next document does not fit
                if self._tokens:
                    self._close()
                    continue
                last = first + 1  # longer than a whole shard: it gets one of its own
            self._write(tokens[start : ends[last - 1]], lengths[first:last], codes[first:last], ids[first:last])
            first = last

    def _write(self, tokens: np.ndarray, lengths: np.ndarray, codes: np.ndarray, ids: list[str]) -> None:
        assert self._bin is not None and self._ids is not None
        data = tokens.tobytes()
        self._bin.write(data)
        self._digest.update(data)
        self._ids.write("".join(encode_basestring(doc_id) + "\n" for doc_id in ids))
        self._lengths.append(lengths)
        self._codes.append(codes)
        self._tokens += len(tokens)

    def finish(self) -> None:
        if self._bin is not None:
            self._close()

    def abort(self) -> None:
        for handle in (self._bin, self._ids):
            if handle is not None:
                handle.close()


def write_shards(
    docs: Iterable[Document],
    tokenizer_dir: Path,
    out_dir: Path,
    *,
    workers: int = 1,
    batch_docs: int = 512,
    shard_tokens: int = 1 << 26,
    progress: bool = True,
) -> dict:
    """Tokenize `docs` into a shard directory at `out_dir` (replacing an older one) and return its metadata.

    Streams: documents are read, encoded and written in batches, so memory holds a few batches, not the corpus.
    """
    for name, value in (("workers", workers), ("batch_docs", batch_docs), ("shard_tokens", shard_tokens)):
        if value < 1:
            raise PolyLMError(f"write_shards: {name} must be >= 1, got {value}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PolyLMError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and not (out_dir / METADATA_FILE).is_file() and any(out_dir.iterdir()):
        raise PolyLMError(f"{out_dir}: exists and is not a shard directory (no {METADATA_FILE}); not replacing it")
    tokenizer = Tokenizer.from_dir(tokenizer_dir)

    def fill(writer: _ShardWriter) -> None:
        encoded = _encoded(docs, tokenizer, workers, batch_docs)
        with closing(encoded), progress_bar(desc=f"tokenizing {out_dir.name}", unit="doc", disable=not progress) as bar:
            for batch, result in encoded:
                writer.add(batch, result)
                bar.update(len(batch))

    tokenizer_facts = {
        "tokenizer_sha256": _file_sha256(tokenizer.model_file),
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
    }
    return _write_directory(out_dir, shard_tokens, tokenizer_facts, fill)


def merge_shards(pieces: list[ShardSet], out_dir: Path, *, shard_tokens: int = 1 << 26) -> dict:
    """Concatenate shard directories (all of one tokenizer) into one at `out_dir`, documents in the given order.

    The result is byte for byte what `write_shards` gives for the same documents in one pass: shard boundaries
    depend only on the sequence of document lengths. Used to join the pieces that distributed tasks tokenized.
    """
    if not pieces:
        raise PolyLMError(f"{out_dir}: no shard directories to merge")
    facts = {key: pieces[0].metadata[key] for key in ("tokenizer_sha256", "vocab_size", "eos_id")}
    for piece in pieces[1:]:
        if piece.metadata["tokenizer_sha256"] != facts["tokenizer_sha256"]:
            raise PolyLMError(f"{piece.path}: tokenized with another tokenizer than {pieces[0].path}")

    def fill(writer: _ShardWriter) -> None:
        for piece in pieces:
            text_bytes = piece.metadata["text_bytes"]  # counted once per piece, with its first block
            for tokens, lengths, languages, ids in piece.blocks():
                # The pieces' ordered source sets, joined in order, are the ordered set of the whole.
                writer.add_tokens(ids, languages, piece.metadata["sources"], (tokens, lengths, text_bytes))
                text_bytes = 0

    return _write_directory(Path(out_dir), shard_tokens, facts, fill)


def _write_directory(
    out_dir: Path, shard_tokens: int, tokenizer_facts: dict, fill: Callable[[_ShardWriter], None]
) -> dict:
    """Write a shard directory through `fill(writer)` beside `out_dir`, then put it in place whole."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)  # left by a killed run that had this process id
    temp.mkdir()
    writer = _ShardWriter(temp, shard_tokens)
    try:
        fill(writer)
        writer.finish()
        metadata = {
            "format": FORMAT,
            "version": VERSION,
            **tokenizer_facts,
            "dtype": "uint32",
            "languages": list(writer.languages),
            "sources": list(writer.sources),
            "documents": sum(shard["documents"] for shard in writer.shards),
            "tokens": sum(shard["tokens"] for shard in writer.shards),
            "text_bytes": writer.text_bytes,
            "shards": writer.shards,
        }
        write_bytes(temp / METADATA_FILE, (json.dumps(metadata, indent=2, ensure_ascii=False) + "\n").encode())
        fsync_dir(temp)
        replace_dir(temp, out_dir)
    except BaseException:
        writer.abort()
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return metadata


def _check_size(path: Path, expected: int, what: str) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PolyLMError(f"{path}: missing from the shard directory") from None
    if size != expected:
        raise PolyLMError(f"{path}: {size} bytes where metadata.json implies {expected} ({what}); truncated?")


class ShardSet:
    """A shard directory written by `write_shards`, checked on open and read through read-only memory maps.

    Opening reads metadata.json, checks every file's size and every index, and (with `verify`) every shard's
    sha256; token files are mapped on first use. Pass `tokenizer_sha256` to refuse shards of another tokenizer.
    """

    def __init__(self, path: str | Path, tokenizer_sha256: str | None = None, verify: bool = False) -> None:
        self.path = Path(path)
        meta_path = self.path / METADATA_FILE
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolyLMError(f"{meta_path}: not found; is {self.path} a directory written by write_shards?") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolyLMError(f"{meta_path}: not valid JSON ({exc})") from None
        found = (metadata.get("format"), metadata.get("version")) if isinstance(metadata, dict) else (None, None)
        if found != (FORMAT, VERSION):
            raise PolyLMError(f"{meta_path}: format {found[0]!r} version {found[1]!r}, expected {FORMAT!r} {VERSION}")
        if metadata.get("dtype") != "uint32":
            raise PolyLMError(f"{meta_path}: token dtype {metadata.get('dtype')!r}, expected 'uint32'")
        if tokenizer_sha256 is not None and metadata.get("tokenizer_sha256") != tokenizer_sha256:
            raise PolyLMError(
                f"{meta_path}: written with tokenizer sha256 {str(metadata.get('tokenizer_sha256'))[:12]}, "
                f"not the expected {tokenizer_sha256[:12]}; tokenize the source again"
            )
        self.metadata: dict = metadata
        try:
            self._check(meta_path, verify)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolyLMError(f"{meta_path}: malformed ({type(exc).__name__}: {exc})") from None
        self._maps: list[np.ndarray | None] = [None] * len(self._offsets)
        self._languages: list[str] | None = None
        self._ids: dict[int, list[str]] = {}
        # Changes with any shard's content, the tokenizer or a count: what a sampler's saved state is tied to.
        self.fingerprint = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:16]

    def _check(self, meta_path: Path, verify: bool) -> None:
        languages = self.metadata["languages"]
        self._offsets: list[np.ndarray] = []
        codes = []
        for shard in self.metadata["shards"]:
            name, documents, tokens = str(shard["name"]), int(shard["documents"]), int(shard["tokens"])
            bin_path, idx_path, lang_path = (self.path / f"{name}{suffix}" for suffix in (".bin", ".idx", ".lang"))
            _check_size(bin_path, tokens * TOKEN_DTYPE.itemsize, f"{tokens} uint32 tokens")
            _check_size(idx_path, (documents + 1) * OFFSET_DTYPE.itemsize, f"{documents + 1} uint64 offsets")
            _check_size(lang_path, documents, f"{documents} uint8 language indices")
            offsets = np.fromfile(idx_path, dtype=OFFSET_DTYPE).astype(np.int64)
            if documents < 1 or offsets[0] != 0 or offsets[-1] != tokens or np.any(np.diff(offsets) < 1):
                raise PolyLMError(f"{idx_path}: offsets do not rise from 0 to {tokens} in steps of at least 1")
            shard_codes = np.fromfile(lang_path, dtype=np.uint8)
            if shard_codes.max() >= len(languages):
                raise PolyLMError(f"{lang_path}: language index beyond the {len(languages)} in metadata.json")
            if verify and _file_sha256(bin_path) != shard["sha256"]:
                raise PolyLMError(f"{bin_path}: sha256 differs from metadata.json; the shard was changed or corrupted")
            self._offsets.append(offsets)
            codes.append(shard_codes)
        counts = [len(offsets) - 1 for offsets in self._offsets]
        self._doc_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._lengths = np.concatenate([np.diff(o) for o in self._offsets]) if counts else np.empty(0, np.int64)
        self._lengths.flags.writeable = False
        self._codes = np.concatenate(codes) if codes else np.empty(0, np.uint8)
        if self._doc_starts[-1] != self.metadata["documents"] or self._lengths.sum() != self.metadata["tokens"]:
            raise PolyLMError(f"{meta_path}: its document or token total differs from the sum over its shards")

    @property
    def num_documents(self) -> int:
        return int(self.metadata["documents"])

    @property
    def num_tokens(self) -> int:
        return int(self.metadata["tokens"])

    def doc_lengths(self) -> np.ndarray:
        """Tokens of each document including its `</s>` (int64, read-only, shared: do not modify)."""
        return self._lengths

    def doc_languages(self) -> list[str]:
        """Language code of each document (built once and shared: do not modify)."""
        if self._languages is None:
            self._languages = np.asarray(self.metadata["languages"], dtype=object)[self._codes].tolist()
        return self._languages

    def _locate(self, index: int) -> tuple[int, int]:
        """(shard, index within it) of global document `index`."""
        if not 0 <= index < self.num_documents:
            raise IndexError(f"{self.path}: document {index} is outside 0..{self.num_documents - 1}")
        shard = int(np.searchsorted(self._doc_starts, index, side="right")) - 1
        return shard, index - int(self._doc_starts[shard])

    def document(self, index: int) -> np.ndarray:
        """Tokens of document `index` (counted across shards) including its `</s>`: a read-only uint32 view."""
        shard, local = self._locate(index)
        tokens = self._maps[shard]
        if tokens is None:
            path = self.path / f"{self.metadata['shards'][shard]['name']}.bin"
            tokens = self._maps[shard] = np.memmap(path, dtype=TOKEN_DTYPE, mode="r").view(np.ndarray)
        offsets = self._offsets[shard]
        return tokens[offsets[local] : offsets[local + 1]]

    def blocks(self, max_tokens: int = 1 << 22) -> Iterator[tuple[np.ndarray, np.ndarray, list[str], list[str]]]:
        """Every document in order, as blocks of whole documents of about `max_tokens` tokens (one document may
        exceed it): tokens, each document's length, language and id. Memory stays at one block."""
        languages = self.metadata["languages"]
        for shard, offsets in enumerate(self._offsets):
            name = self.metadata["shards"][shard]["name"]
            tokens = np.memmap(self.path / f"{name}.bin", dtype=TOKEN_DTYPE, mode="r")
            first = int(self._doc_starts[shard])
            with (self.path / f"{name}.ids.jsonl").open(encoding="utf-8") as id_lines:
                start = 0
                while start < len(offsets) - 1:
                    end = max(start + 1, int(np.searchsorted(offsets, offsets[start] + max_tokens, side="right")) - 1)
                    ids = [json.loads(next(id_lines)) for _ in range(end - start)]
                    codes = self._codes[first + start : first + end]
                    block = np.array(tokens[offsets[start] : offsets[end]])
                    yield block, np.diff(offsets[start : end + 1]), [languages[c] for c in codes], ids
                    start = end

    def document_id(self, index: int) -> str:
        """The id the document had in the input (e.g. `corpus/en.txt:17`), to trace a sample to its source."""
        shard, local = self._locate(index)
        if shard not in self._ids:
            path = self.path / f"{self.metadata['shards'][shard]['name']}.ids.jsonl"
            try:
                ids = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            except FileNotFoundError:
                raise PolyLMError(f"{path}: missing from the shard directory") from None
            if len(ids) != len(self._offsets[shard]) - 1:
                raise PolyLMError(f"{path}: {len(ids)} ids for {len(self._offsets[shard]) - 1} documents")
            self._ids[shard] = ids
        return self._ids[shard][local]
