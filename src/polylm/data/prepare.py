"""`polylm data prepare`: sources -> cleaned documents -> tokenizer -> token shards -> curriculum, with every
drop counted, all driven by one YAML file whose resolved form is saved beside the output (`data.json`).

Output directory:
    data.json            resolved config, drops and errors by reason, sources, stages, fingerprint
    rejects.jsonl        dropped documents with their reason (when pipeline.rejects is on)
    clean/SOURCE.jsonl   the documents that survived cleaning, in order
    tokenizer/           the tokenizer used (given, or trained on the cleaned text)
    shards/SOURCE/       uint32 token shards of each source (see shards.py)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from polylm.configfile import build, read_json, read_yaml
from polylm.data.bilingual import BilingualConfig, bilingual_documents
from polylm.data.curriculum import CurriculumConfig, CurriculumSampler, SourceInfo, Stage, polylm_curriculum
from polylm.data.documents import Document, Ledger
from polylm.data.executors import ExecutorSection
from polylm.data.filters import (
    ExactDedup,
    LanguageFilter,
    MinHashDedup,
    NormalizeNFC,
    QualityConfig,
    QualityFilter,
    run_steps,
)
from polylm.data.megatron import write_megatron
from polylm.data.readers import read_documents, read_pairs
from polylm.data.shards import ShardSet, write_shards
from polylm.durable import written_whole
from polylm.errors import PolyLMError
from polylm.runlock import hold_run_dir
from polylm.tokenizer import Tokenizer, TokenizerTrainingConfig, train_tokenizer


@dataclass
class ParallelEntry:
    """One bilingual input: aligned files (`src_file` + `tgt_file`), a `tsv` of pairs, or a `jsonl` of
    {src, tgt, src_lang, tgt_lang} records."""

    src_file: str | None = None
    tgt_file: str | None = None
    tsv: str | None = None
    jsonl: str | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None

    def files(self) -> dict[str, Path]:
        return {key: Path(value) for key in ("src_file", "tgt_file", "tsv", "jsonl") if (value := getattr(self, key))}

    def languages(self) -> dict[str, str]:
        return {key: value for key in ("src_lang", "tgt_lang") if (value := getattr(self, key))}


@dataclass
class SourceConfig:
    name: str
    lang: str | None = None
    """Monolingual sources: the ISO 639-1 code of every file."""
    paths: list[str] = field(default_factory=list)
    text_field: str = "text"
    text_mode: str = "line"
    """`line`: a document per line; `paragraph`: blank-line separated documents (plain text only)."""
    parallel: list[ParallelEntry] = field(default_factory=list)
    """Bilingual sources: entries of {src_file, tgt_file, src_lang, tgt_lang} | {tsv, src_lang, tgt_lang} | {jsonl}."""

    @property
    def bilingual(self) -> bool:
        return bool(self.parallel)


@dataclass
class PipelineConfig:
    quality: QualityConfig | None = field(default_factory=QualityConfig)
    """The quality rules' thresholds (data/filters.py); null disables them."""
    language_id: bool = True
    exact_dedup: bool = True
    minhash_threshold: float | None = 0.8
    """Jaccard threshold for near-duplicates; null disables MinHash dedup."""
    rejects: bool = False


@dataclass
class TokenizerSection:
    path: str | None = None
    """An existing tokenizer directory; when absent one is trained on the cleaned monolingual text."""
    vocab_size: int = 8000
    model_type: str = "bpe"


@dataclass
class CurriculumSection:
    preset: str | None = "polylm"
    total_tokens: int = 1_000_000
    switch_fraction: float = 0.8
    seq_len: int = 2048
    seed: int = 1234
    stages: list[Stage] = field(default_factory=list)
    """Custom stages (name, tokens, non_english_share | weights, bilingual_boost) instead of a preset."""

    def build(self) -> CurriculumConfig:
        if self.stages:
            return CurriculumConfig(list(self.stages), self.seq_len, self.seed)
        if self.preset != "polylm":
            raise PolyLMError(f"data config: curriculum.preset {self.preset!r} is unknown (polylm) and no stages given")
        return polylm_curriculum(self.total_tokens, self.switch_fraction, self.seq_len, self.seed)


@dataclass
class DataConfig:
    sources: list[SourceConfig]
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    bilingual: BilingualConfig = field(default_factory=BilingualConfig)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    curriculum: CurriculumSection = field(default_factory=CurriculumSection)
    workers: int = 1
    """Tokenizer processes of the in-process path (`--executor` runs use executor.workers)."""
    executor: ExecutorSection = field(default_factory=ExecutorSection)
    """Tasks, and the settings of `--executor local|slurm|ray` (docs/data.md)."""
    megatron: bool = False
    """Also write Megatron-LM's indexed datasets, OUT/megatron/SOURCE_text_document.{bin,idx} (`--format
    megatron`; layout in data/megatron.py)."""
    validation_fraction: float = 0.0
    """Share of each monolingual source's cleaned documents held out for validation (OUT/validation/SOURCE),
    chosen by a hash of the document id so the split is stable; training never sees them."""


def load_config(path: Path) -> DataConfig:
    """Read the YAML data config; relative file paths are relative to the config file."""
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not raw.get("sources") or not isinstance(raw["sources"], list):
        raise PolyLMError(f"{path}: sources: needs a list of sources")
    base = path.parent
    sources = []
    for number, entry in enumerate(raw.pop("sources")):
        where = f"sources[{number}]"
        source = build(SourceConfig, entry, str(path), where)
        source.paths = [_resolved(base, p, path, f"{where}.paths[{i}]") for i, p in enumerate(source.paths)]
        for index, pair in enumerate(source.parallel):
            for key, value in pair.files().items():
                setattr(pair, key, _resolved(base, str(value), path, f"{where}.parallel[{index}].{key}"))
            if not (pair.tsv or pair.jsonl or (pair.src_file and pair.tgt_file)):
                raise PolyLMError(f"{path}: {where}.parallel[{index}]: needs src_file + tgt_file, tsv or jsonl")
        if bool(source.lang) == bool(source.parallel) or (source.lang and not source.paths):
            raise PolyLMError(f"{path}: {where}: source {source.name!r} needs either lang + paths or parallel")
        sources.append(source)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise PolyLMError(f"{path}: source names must be unique, got {names}")
    config = build(DataConfig, {**raw, "sources": []}, str(path))
    config.sources = sources
    if not 0 <= config.validation_fraction < 1:
        raise PolyLMError(f"{path}: validation_fraction must be in [0, 1), got {config.validation_fraction}")
    if config.tokenizer.path:
        config.tokenizer.path = _resolved(base, config.tokenizer.path, path, "tokenizer.path")
    return config


def _resolved(base: Path, value: str, path: Path, key: str) -> str:
    """A file named in the config, relative to the config file's folder."""
    if "\x00" in value:
        raise PolyLMError(f"{path}: {key}: a path cannot hold a NUL character")
    return str((base / value).resolve())


def source_inputs(source: SourceConfig) -> list:
    """The inputs of a source, each read as a whole: a file path (monolingual) or a parallel entry (bilingual)."""
    return list(source.parallel) if source.bilingual else list(source.paths)


def input_documents(source: SourceConfig, number: int, config: DataConfig, ledger: Ledger) -> Iterator[Document]:
    """The documents of input `number` of `source` (see `source_inputs`), in reading order.

    Config mistakes (a missing file, an unsupported format) raise here, at the call, before anything is read.
    """
    entry = source_inputs(source)[number]
    if source.bilingual:
        pairs = read_pairs(source.name, ledger, **entry.files(), **entry.languages())
        return bilingual_documents(pairs, config.bilingual)
    return read_documents(Path(entry), source.lang, source.name, ledger, source.text_field, source.text_mode)


def _source_documents(source: SourceConfig, config: DataConfig, ledger: Ledger) -> Iterator[Document]:
    for number in range(len(source_inputs(source))):
        yield from input_documents(source, number, config, ledger)


def document_steps(config: DataConfig, bilingual: bool) -> list:
    """The steps that judge each document alone (no state): what any number of tasks can run in parallel."""
    steps: list = [NormalizeNFC()]
    if bilingual:
        return steps
    if config.pipeline.quality is not None:
        steps.append(QualityFilter(config.pipeline.quality))
    if config.pipeline.language_id:
        steps.append(LanguageFilter())
    return steps


def _steps(config: DataConfig) -> tuple[list, list]:
    """Cleaning steps for monolingual and for bilingual documents (dedup state shared across sources)."""
    exact = [ExactDedup()] if config.pipeline.exact_dedup else []
    threshold = config.pipeline.minhash_threshold
    near = [MinHashDedup(threshold=threshold)] if threshold is not None else []
    return document_steps(config, False) + exact + near, document_steps(config, True) + exact


def held_out(doc: Document, fraction: float) -> bool:
    """A stable choice that depends on the source and the text only (not on where the files live)."""
    digest = hashlib.sha256(f"{doc.source}\0{doc.text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _write_jsonl(docs: Iterator[Document], path: Path, validation: Path | None = None, fraction: float = 0.0) -> int:
    """Write the kept documents; with `validation`, a `fraction` of them goes there instead. Returns all kept."""
    count = 0
    with path.open("w", encoding="utf-8") as train, (validation or Path(os.devnull)).open("w") as held:
        for doc in docs:
            line = json.dumps(asdict(doc), ensure_ascii=False) + "\n"
            (held if validation is not None and held_out(doc, fraction) else train).write(line)
            count += 1
    return count


def read_jsonl(path: Path) -> Iterator[Document]:
    """The documents of a clean-text file (`Document` fields as JSON, one per line)."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield Document(**json.loads(line))


def train_tokenizer_on(config: DataConfig, documents: Callable[[SourceConfig], Iterable[Document]], out: Path) -> None:
    """Write `out/tokenizer`: the configured one, or one trained on the cleaned monolingual text of each source
    (`documents(source)`), one input file per language so that sampling balances languages."""
    if config.tokenizer.path:
        Tokenizer.from_dir(config.tokenizer.path).save(out / "tokenizer")
        return
    texts = out / "tokenizer-input"
    texts.mkdir(parents=True, exist_ok=True)
    for path in texts.glob("*.txt"):
        path.unlink()
    for source in config.sources:
        if source.bilingual:
            continue
        with (texts / f"{source.lang}.txt").open("a", encoding="utf-8") as handle:  # sources of a language add up
            for doc in documents(source):
                handle.write(doc.text.replace("\n", " ") + "\n")
    section = config.tokenizer
    training = TokenizerTrainingConfig(vocab_size=section.vocab_size, model_type=section.model_type)
    train_tokenizer(sorted(texts.glob("*.txt")), out / "tokenizer", training)
    shutil.rmtree(texts)


def prepare(config: DataConfig, out: Path, config_path: Path | None = None) -> dict:
    """Run the whole preparation into `out` and return the summary saved as `out/data.json`."""
    with hold_run_dir(out, "polylm data prepare"):
        return _prepare(config, out, config_path)


def _prepare(config: DataConfig, out: Path, config_path: Path | None) -> dict:
    ledger = Ledger()
    if config.pipeline.rejects:
        ledger.open_rejects(out / "rejects.jsonl")
    clean = out / "clean"
    clean.mkdir(exist_ok=True)
    mono_steps, bilingual_steps = _steps(config)
    kept: Counter = Counter()
    try:
        for source in config.sources:
            steps = bilingual_steps if source.bilingual else mono_steps
            docs = run_steps(_source_documents(source, config, ledger), steps, ledger)
            held_out = (
                clean / f"{source.name}.val.jsonl" if config.validation_fraction and not source.bilingual else None
            )
            kept[source.name] = _write_jsonl(docs, clean / f"{source.name}.jsonl", held_out, config.validation_fraction)
            if kept[source.name] == 0:
                raise PolyLMError(f"source {source.name!r}: no document survived reading and cleaning")
    finally:
        if ledger.rejects is not None:
            ledger.rejects.close()

    train_tokenizer_on(config, lambda source: read_jsonl(clean / f"{source.name}.jsonl"), out)
    for source in config.sources:
        write_shards(read_jsonl(clean / f"{source.name}.jsonl"), out / "tokenizer", out / "shards" / source.name,
                     workers=config.workers)  # fmt: skip
        held_out = clean / f"{source.name}.val.jsonl"
        if held_out.exists() and held_out.stat().st_size:
            write_shards(read_jsonl(held_out), out / "tokenizer", out / "validation" / source.name, workers=1,
                         progress=False)  # fmt: skip
    return write_summary(config, out, ledger.to_dict(), dict(kept), config_path)


def write_summary(
    config: DataConfig, out: Path, ledger: dict, kept: dict, config_path: Path | None, run: dict | None = None
) -> dict:
    """Open the shards in `out`, build the curriculum over them, and write `out/data.json` (returned).

    `run` says how the data was prepared when that was not in this process (executor, tasks).
    """
    infos = [
        SourceInfo(s.name, "bilingual" if s.bilingual else s.lang or "", s.bilingual, ShardSet(out / "shards" / s.name))
        for s in config.sources
    ]
    validation = []
    for source in config.sources:
        if config.validation_fraction and not source.bilingual and (out / "validation" / source.name).is_dir():
            shards = ShardSet(out / "validation" / source.name)
            validation.append({"name": source.name, "lang": source.lang, "documents": shards.num_documents,
                               "tokens": shards.num_tokens})  # fmt: skip
    sampler = CurriculumSampler(infos, config.curriculum.build())
    summary = {
        "config": asdict(config),
        "config_file": str(config_path) if config_path else None,
        **({"run": run} if run else {}),
        "ledger": ledger,
        "kept": kept,
        "sources": [
            {
                "name": i.name,
                "lang": i.lang,
                "bilingual": i.bilingual,
                "documents": i.shards.num_documents,
                "tokens": i.shards.num_tokens,
            }
            for i in infos
        ],
        "validation": validation,
        "fingerprint": sampler.fingerprint,
        "stages": sampler.stage_summary(),
        "epochs": sampler.epochs(),
    }
    if config.megatron:
        summary["megatron"] = write_megatron(out, sampler)
    with written_whole(out / "data.json") as handle:  # a kill never leaves half a data.json
        handle.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def open_sampler(data_dir: Path) -> CurriculumSampler:
    """The curriculum sampler of a prepared directory, as training uses it."""
    summary = load_summary(data_dir)
    curriculum = build(CurriculumSection, summary["config"]["curriculum"], str(data_dir / "data.json"), "curriculum")
    infos = [
        SourceInfo(s["name"], s["lang"], s["bilingual"], ShardSet(data_dir / "shards" / s["name"]))
        for s in summary["sources"]
    ]
    sampler = CurriculumSampler(infos, curriculum.build())
    if sampler.fingerprint != summary["fingerprint"]:
        raise PolyLMError(f"{data_dir}: shards or mixture changed since data.json was written; prepare again")
    return sampler


def load_summary(data_dir: Path) -> dict:
    return read_json(data_dir / "data.json", "polylm data prepare")
