"""The data pipeline cut into stages of tasks, as datatrove pipeline steps, so that datatrove's executors can run
it on one machine, a Slurm cluster or a Ray cluster (`polylm data prepare --executor ...`, see executors.py).

The unit of work is an *input*: one file of a monolingual source, or one parallel entry of a bilingual one,
numbered in config order. A task takes every `tasks`-th input (datatrove's own file sharding), so the result
does not depend on which task ran what; each input's documents keep their reading position, and every merge
goes by (input, position): the reading order of the in-process path. Stages run one after another:

    clean      N tasks  read, normalize, quality and language filters; keep survivors and dedup signatures
    buckets    N tasks  one hash partition of the signatures: exact copies, and documents sharing a MinHash band
    resolve    1 task   which documents dedup drops (below)
    filter     N tasks  drop them; write clean/SOURCE/NNNNN.jsonl (+ .val.jsonl, the held-out share)
    tokenizer  1 task   the configured tokenizer, or one trained on the clean monolingual text
    tokenize   N tasks  each input's documents into a shard piece
    finalize   1 task   pieces joined per source (byte for byte the in-process shards), ledgers and rejects
                        merged in reading order, curriculum, OUT/data.json; then OUT/work is removed

Dedup is global across tasks and decides what the in-process `ExactDedup` + `MinHashDedup` decide: the first
copy of a text in reading order stays; a document goes as `dedup:near` when it shares a MinHash band (the same
bands as datasketch's LSH index) with an earlier document that stayed. That is a greedy pass, as datatrove's
cluster stage is a union-find pass: only documents that share a band with another take part in it.

Every file a task writes appears whole (written beside, then renamed), and a task redone after a kill rewrites
the same names, so a restarted run gives the bytes of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from polylm.configfile import read_json
from polylm.data.documents import Document, Ledger
from polylm.data.filters import ExactDedup, MinHashDedup, run_steps
from polylm.data.prepare import (
    DataConfig,
    SourceConfig,
    document_steps,
    held_out,
    input_documents,
    read_jsonl,
    source_inputs,
    train_tokenizer_on,
    write_summary,
)
from polylm.data.shards import ShardSet, merge_shards, write_shards
from polylm.durable import written_whole
from polylm.errors import PolyLMError

POSITION_BITS = 40
"""A document's order key is `input << POSITION_BITS | position`: up to 2**40 documents per input file."""
SIGNATURE = np.dtype([("kind", "u1"), ("k0", "<u8"), ("k1", "<u8"), ("key", "<u8")])
"""A dedup signature: kind 0 is the exact-text hash, kind b + 1 MinHash band b; (k0, k1) the 128-bit hash."""
BUCKET_ROWS = 1 << 20
"""Signature rows a dedup partition sorts at once (about 33 MB); a larger partition is sorted in several passes."""
GROUP = np.dtype([("group", "<u8"), ("key", "<u8")])
REMOVED = np.dtype([("key", "<u8"), ("reason", "u1")])
REASONS = ("dedup:exact", "dedup:near")
SIGNATURE_CHUNK = 1 << 16
"""Signature rows (about 10 per document) per file: a task's memory does not grow with its input files."""


@dataclass(frozen=True)
class Input:
    """Input `number` of source `source` (indices into the config), the `index`-th input of the whole config."""

    index: int
    source: int
    number: int


@dataclass
class Plan:
    """What every task needs: the config, the output directory and the number of tasks (= hash partitions)."""

    config: DataConfig
    out: Path
    tasks: int
    config_path: Path | None = None

    @cached_property
    def inputs(self) -> list[Input]:
        found = [(s, n) for s, source in enumerate(self.config.sources) for n in range(len(source_inputs(source)))]
        return [Input(index, s, n) for index, (s, n) in enumerate(found)]

    def inputs_of(self, rank: int, world_size: int) -> list[Input]:
        return self.inputs[rank::world_size]

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def identity(self) -> str:
        """Changes with anything that changes the result or which task does what (not with executor settings)."""
        settings = {k: v for k, v in asdict(self.config).items() if k != "executor"}
        return hashlib.sha256(json.dumps([settings, self.tasks], sort_keys=True).encode()).hexdigest()[:16]

    def clean_file(self, item: Input, validation: bool = False) -> Path:
        name = self.config.sources[item.source].name
        return self.out / "clean" / name / f"{item.number:05d}{'.val' if validation else ''}.jsonl"


def _save_array(path: Path, array: np.ndarray) -> None:
    with written_whole(path, "wb") as handle:
        np.save(handle, array)


def _load_arrays(paths: Iterable[Path], dtype: np.dtype, select: Callable | None = None) -> np.ndarray:
    """The arrays saved at `paths`, joined; with `select`, only what it keeps of each (read through a memory map)."""
    arrays = [select(np.load(path, mmap_mode="r")) if select else np.load(path) for path in paths]
    return np.concatenate(arrays) if arrays else np.empty(0, dtype)


def _positioned(docs: Iterable[Document], ledger: Ledger) -> Iterator[Document]:
    """Set `ledger.position` to each document's reading position while the steps judge it (they are lazy)."""
    for position, doc in enumerate(docs):
        ledger.position = position
        yield doc


class Stage(PipelineStep):
    """A stage of the plan; `run` does the whole task (reading, writing) and passes no documents on."""

    type = "polylm"

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan

    def count(self, ledger: Ledger) -> None:
        """Drops by reason into datatrove's stats too (its stats.json per stage, beside polylm's ledger)."""
        for reason, count in ledger.drops.items():
            self.stat_update(reason, value=count)


class Clean(Stage):
    name = "clean"

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> None:
        plan, config = self.plan, self.plan.config
        exact = config.pipeline.exact_dedup
        threshold = config.pipeline.minhash_threshold
        near = MinHashDedup(threshold) if threshold is not None else None
        for item in plan.inputs_of(rank, world_size):
            source = config.sources[item.source]
            rejects_path = plan.work / "rejects" / f"{item.index:05d}.clean.tsv"
            ledger, kept = Ledger(), 0
            signatures = _Signatures(plan, item, exact, None if source.bilingual else near)
            with (
                written_whole(rejects_path) if config.pipeline.rejects else open(os.devnull, "w") as rejects,
                written_whole(plan.work / "clean" / f"{item.index:05d}.tsv") as out,
            ):
                ledger.rejects = rejects if config.pipeline.rejects else None
                docs = _positioned(input_documents(source, item.number, config, ledger), ledger)
                for doc in run_steps(docs, document_steps(config, source.bilingual), ledger):
                    out.write(f"{ledger.position}\t{json.dumps(asdict(doc), ensure_ascii=False)}\n")
                    signatures.add(doc, ledger.position)
                    kept += 1
                signatures.flush()
            ledger.rejects = None
            with written_whole(plan.work / "ledger" / f"{item.index:05d}.clean.json") as out:
                json.dump(ledger.to_dict(), out, ensure_ascii=False)
            self.count(ledger)
            self.stat_update("kept", value=kept)


class _Signatures:
    """Exact and MinHash band hashes of one input's survivors, written per hash partition in chunks."""

    def __init__(self, plan: Plan, item: Input, exact: bool, near: MinHashDedup | None) -> None:
        self.plan, self.item, self.exact, self.near = plan, item, exact, near
        self.rows: list[tuple[int, bytes, int]] = []
        self.chunk = 0

    def add(self, doc: Document, position: int) -> None:
        key = self.item.index << POSITION_BITS | position
        if self.exact:
            self.rows.append((0, ExactDedup.key(doc.text), key))
        if self.near is not None:
            values = self.near.signature(doc).hashvalues
            for band, (start, end) in enumerate(self.near.index.hashranges):
                digest = hashlib.blake2b(values[start:end].tobytes(), digest_size=16).digest()
                self.rows.append((band + 1, digest, key))
        if len(self.rows) >= SIGNATURE_CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write the rows gathered so far, one file per hash partition."""
        if not self.rows:
            return
        table = np.zeros(len(self.rows), SIGNATURE)
        kinds, digests, keys = zip(*self.rows, strict=True)
        halves = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)
        table["kind"], table["k0"], table["k1"], table["key"] = kinds, halves[:, 0], halves[:, 1], keys
        partition = table["k0"] % self.plan.tasks
        for part in range(self.plan.tasks):
            path = self.plan.work / "signatures" / f"{part:05d}" / f"{self.item.index:05d}-{self.chunk:05d}.npy"
            _save_array(path, table[partition == part])
        self.rows, self.chunk = [], self.chunk + 1


class Buckets(Stage):
    """One partition of the signatures: later exact copies, and the groups of documents that share a band.

    A partition larger than BUCKET_ROWS is done in several passes, each over the rows of one hash range, so
    that a task's memory does not grow with the corpus."""

    name = "buckets"

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> None:
        files = sorted((self.plan.work / "signatures" / f"{rank:05d}").glob("*.npy"))
        rows = sum(np.load(path, mmap_mode="r").shape[0] for path in files)
        passes = max(1, -(-rows // BUCKET_ROWS))
        exact, groups, numbered = [], [], 0
        for part in range(passes):
            table = _load_arrays(files, SIGNATURE, lambda t, part=part: t[t["k1"] % passes == part])
            table = table[np.lexsort((table["key"], table["k1"], table["k0"], table["kind"]))]
            starts = np.ones(len(table), dtype=bool)
            starts[1:] = (
                (table["kind"][1:] != table["kind"][:-1])
                | (table["k0"][1:] != table["k0"][:-1])
                | (table["k1"][1:] != table["k1"][:-1])
            )
            group = np.cumsum(starts) - 1
            exact.append(table["key"][~starts & (table["kind"] == 0)])
            sizes = np.bincount(group, minlength=int(group[-1]) + 1 if len(group) else 0)
            shared = (table["kind"] > 0) & (sizes[group] > 1)
            found = np.zeros(int(shared.sum()), GROUP)
            found["group"] = (np.uint64(rank) << np.uint64(POSITION_BITS)) | (group[shared] + numbered).astype("<u8")
            found["key"] = table["key"][shared]
            groups.append(found)
            numbered += len(sizes)
        dedup = self.plan.work / "dedup"
        _save_array(dedup / f"exact-{rank:05d}.npy", np.concatenate(exact))
        _save_array(dedup / f"groups-{rank:05d}.npy", np.concatenate(groups))
        self.stat_update("signatures", value=rows)
        self.stat_update("passes", value=passes)


class Resolve(Stage):
    """The greedy pass in reading order over the documents that share a band with another."""

    name = "resolve"

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> None:
        dedup = self.plan.work / "dedup"
        exact = np.unique(_load_arrays(sorted(dedup.glob("exact-*.npy")), np.dtype("<u8")))
        groups = _load_arrays(sorted(dedup.glob("groups-*.npy")), GROUP)
        groups = groups[~np.isin(groups["key"], exact)]  # an exact copy never reached MinHash
        groups = groups[np.argsort(groups["key"], kind="stable")]
        _, dense = np.unique(groups["group"], return_inverse=True)
        keys, starts = np.unique(groups["key"], return_index=True)
        ends = np.append(starts[1:], len(groups))[: len(starts)]  # none when no document shares a band
        has_kept = np.zeros(int(dense.max()) + 1 if len(dense) else 0, dtype=bool)
        near = []
        for key, start, end in zip(keys.tolist(), starts.tolist(), ends.tolist(), strict=True):
            member_of = dense[start:end]
            if has_kept[member_of].any():
                near.append(key)
            else:
                has_kept[member_of] = True
        removed = np.zeros(len(exact) + len(near), REMOVED)
        removed["key"] = np.concatenate([exact, np.asarray(near, dtype="<u8")])
        removed["reason"][len(exact) :] = 1
        _save_array(dedup / "removed.npy", removed[np.argsort(removed["key"], kind="stable")])
        self.stat_update(REASONS[0], value=len(exact))
        self.stat_update(REASONS[1], value=len(near))


class Filter(Stage):
    name = "filter"

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> None:
        plan, config = self.plan, self.plan.config
        removed = np.load(plan.work / "dedup" / "removed.npy")
        for item in plan.inputs_of(rank, world_size):
            bounds = np.searchsorted(removed["key"], [item.index << POSITION_BITS, item.index + 1 << POSITION_BITS])
            mask = (1 << POSITION_BITS) - 1
            drops = {key & mask: REASONS[reason] for key, reason in removed[bounds[0] : bounds[1]].tolist()}
            rejects_path = plan.work / "rejects" / f"{item.index:05d}.filter.tsv"
            validation = bool(config.validation_fraction) and not config.sources[item.source].bilingual
            ledger, kept = Ledger(), 0
            with (
                written_whole(rejects_path) if config.pipeline.rejects else open(os.devnull, "w") as rejects,
                written_whole(plan.clean_file(item)) as train,
                written_whole(plan.clean_file(item, True)) if validation else open(os.devnull, "w") as held,
            ):
                ledger.rejects = rejects if config.pipeline.rejects else None
                dedup_steps = _dedup_steps(config, config.sources[item.source].bilingual)
                for position, doc in _clean_survivors(plan, item):
                    reason, dropped_at = drops.get(position), None
                    for step, step_reason in dedup_steps:  # the in-process steps' accounting, step by step
                        ledger.entered[step] += 1
                        if reason == step_reason:
                            dropped_at = step
                            break
                        ledger.kept_by[step] += 1
                    if reason is not None:
                        ledger.position = position
                        ledger.drop(reason, doc, dropped_at)
                        continue
                    line = json.dumps(asdict(doc), ensure_ascii=False) + "\n"
                    (held if validation and held_out(doc, config.validation_fraction) else train).write(line)
                    kept += 1
            ledger.rejects = None
            with written_whole(plan.work / "ledger" / f"{item.index:05d}.filter.json") as out:
                json.dump({**ledger.to_dict(), "kept": kept}, out, ensure_ascii=False)
            self.count(ledger)
            self.stat_update("kept", value=kept)


def _dedup_steps(config: DataConfig, bilingual: bool) -> list[tuple[str, str]]:
    """(funnel step, drop reason) of the dedup steps the in-process path runs on such a source, in order."""
    steps = [("exact_dedup", REASONS[0])] if config.pipeline.exact_dedup else []
    near = config.pipeline.minhash_threshold is not None and not bilingual
    return steps + ([("near_dedup", REASONS[1])] if near else [])


def _clean_survivors(plan: Plan, item: Input) -> Iterator[tuple[int, Document]]:
    for position, record in _tagged_lines(plan.work / "clean" / f"{item.index:05d}.tsv"):
        yield position, Document(**json.loads(record))


class TrainTokenizer(Stage):
    name = "tokenizer"

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> None:
        plan = self.plan
        kept = _kept_per_source(plan)
        for source in plan.config.sources:
            if kept[source.name] == 0:
                raise PolyLMError(f"source {source.name!r}: no document survived reading and cleaning")
        names = [source.name for source in plan.config.sources]

        def documents(source: SourceConfig) -> Iterator[Document]:
            for item in plan.inputs:
                if names[item.source] == source.name:
                    yield from read_jsonl(plan.clean_file(item))  # filter writes one per input

        train_tokenizer_on(plan.config, documents, plan.out)


def _kept_per_source(plan: Plan) -> dict[str, int]:
    kept = {source.name: 0 for source in plan.config.sources}
    for item in plan.inputs:
        kept[plan.config.sources[item.source].name] += read_json(
            plan.work / "ledger" / f"{item.index:05d}.filter.json"
        )["kept"]
    return kept


class Tokenize(Stage):
    name = "tokenize"

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> None:
        plan = self.plan
        for item in plan.inputs_of(rank, world_size):
            for validation in (False, True):
                path = plan.clean_file(item, validation)
                if path.exists() and path.stat().st_size:
                    piece = plan.work / "pieces" / f"{item.index:05d}{'.val' if validation else ''}"
                    metadata = write_shards(read_jsonl(path), plan.out / "tokenizer", piece, progress=False)
                    self.stat_update("tokens", value=metadata["tokens"])


class Finalize(Stage):
    name = "finalize"

    def __init__(self, plan: Plan, run: dict) -> None:
        super().__init__(plan)
        self.run_facts = run

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> None:
        plan, config = self.plan, self.plan.config
        done = plan.out / "data.json"
        if done.exists() and read_json(done).get("run", {}).get("plan") == plan.identity:
            shutil.rmtree(plan.work, ignore_errors=True)  # killed after data.json, before the clean-up
            return
        for validation, target in ((False, "shards"), (True, "validation")):
            for number, source in enumerate(config.sources):
                suffix = ".val" if validation else ""
                pieces = [plan.work / "pieces" / f"{i.index:05d}{suffix}" for i in plan.inputs if i.source == number]
                found = [ShardSet(piece) for piece in pieces if piece.is_dir()]
                if found:
                    merge_shards(found, plan.out / target / source.name)
        ledger = Ledger()
        for item in plan.inputs:
            for part in ("clean", "filter"):
                ledger.add(read_json(plan.work / "ledger" / f"{item.index:05d}.{part}.json"))
        if config.pipeline.rejects:
            with written_whole(plan.out / "rejects.jsonl") as out:
                for item in plan.inputs:
                    parts = [plan.work / "rejects" / f"{item.index:05d}.{part}.tsv" for part in ("clean", "filter")]
                    for _, record in heapq.merge(*map(_tagged_lines, parts), key=lambda pair: pair[0]):
                        out.write(record)
        write_summary(config, plan.out, ledger.to_dict(), _kept_per_source(plan), plan.config_path,
                      {**self.run_facts, "plan": plan.identity})  # fmt: skip
        shutil.rmtree(plan.work)


def _tagged_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            position, record = line.split("\t", 1)
            yield int(position), record


def stages(plan: Plan, run: dict) -> list[tuple[Stage, int]]:
    """Each stage with its number of tasks, in the order they must run."""
    n = plan.tasks
    return [(Clean(plan), n), (Buckets(plan), n), (Resolve(plan), 1), (Filter(plan), n), (TrainTokenizer(plan), 1),
            (Tokenize(plan), n), (Finalize(plan, run), 1)]  # fmt: skip
