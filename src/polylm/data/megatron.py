"""Megatron-LM's indexed dataset (`PREFIX.bin` + `PREFIX.idx`), written from polylm's shards, so that PolyLM's
Megatron fork (and Megatron-LM, NeMo, Megatron-DeepSpeed) can train on data polylm prepared: `--data-path PREFIX`.

Layout (Megatron-Core `indexed_dataset.py`, every number little-endian):

    PREFIX.bin   the tokens of every document, one after another, int32 (a 256K vocabulary overflows uint16)
    PREFIX.idx   9 bytes   magic b"MMIDIDX\\x00\\x00"
                 uint64    version, 1
                 uint8     dtype code, 4 (int32)
                 uint64    sequence count S (here one sequence per document)
                 uint64    document count D = S + 1 (entries of the document index below)
                 int32[S]  tokens per sequence
                 int64[S]  byte offset of each sequence in PREFIX.bin
                 int64[D]  document index: sequence numbers where documents start, then S (here 0, 1, ..., S)

Each document ends with `</s>` (id 2), as in polylm's shards: Megatron's `--append-eod` with PolyLM's end of
document. The token ids are polylm's uint32 ids, all below 2**31, whose bytes are the same as int32: the `.bin` is
the shards' `.bin` files joined.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from polylm.data.curriculum import CurriculumSampler
from polylm.data.shards import ShardSet
from polylm.durable import written_whole

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
INT32_CODE = 4
SUFFIX = "_text_document"
"""Megatron's preprocess_data.py names its output PREFIX_text_document; so do we, per source."""


def write_indexed_dataset(shards: ShardSet, prefix: Path) -> None:
    """Write `prefix`.bin and `prefix`.idx for the documents of `shards`, in their order; each file appears whole."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    if shards.metadata["vocab_size"] > 2**31:
        raise ValueError(f"{shards.path}: vocabulary of {shards.metadata['vocab_size']} does not fit int32")
    lengths = shards.doc_lengths()
    with written_whole(prefix.with_name(prefix.name + ".bin"), "wb") as out:
        for shard in shards.metadata["shards"]:
            with (shards.path / f"{shard['name']}.bin").open("rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 24)
    pointers = np.zeros(len(lengths), dtype="<i8")
    np.cumsum(lengths[:-1] * 4, out=pointers[1:])
    with written_whole(prefix.with_name(prefix.name + ".idx"), "wb") as out:
        out.write(MAGIC)
        out.write(np.array([VERSION], "<u8").tobytes() + bytes([INT32_CODE]))
        out.write(np.array([len(lengths), len(lengths) + 1], "<u8").tobytes())
        out.write(lengths.astype("<i4").tobytes())
        out.write(pointers.tobytes())
        out.write(np.arange(len(lengths) + 1, dtype="<i8").tobytes())


def write_megatron(out: Path, sampler: CurriculumSampler) -> dict:
    """Megatron datasets for each source's training shards (OUT/megatron/NAME_text_document) and held-out shards
    (OUT/megatron/validation/...), and a `--data-path` blend per curriculum stage (Megatron mixes with fixed
    weights: run one stage per blend). Returns what data.json records under "megatron"."""
    names = [source.name for source in sampler.sources]
    for source in sampler.sources:
        write_indexed_dataset(source.shards, out / "megatron" / f"{source.name}{SUFFIX}")
        if (out / "validation" / source.name).is_dir():
            held_out = ShardSet(out / "validation" / source.name)
            write_indexed_dataset(held_out, out / "megatron" / "validation" / f"{source.name}{SUFFIX}")
    blends = {}
    for stage, weights in zip(sampler.config.stages, sampler.weights, strict=True):
        chosen = [(name, weight) for name, weight in zip(names, weights, strict=True) if weight > 0]
        blends[stage.name] = " ".join(f"{weight:.6g} {out / 'megatron' / (name + SUFFIX)}" for name, weight in chosen)
    return {"data_path_per_stage": blends, "dtype": "int32", "eod_id": sampler.sources[0].shards.metadata["eos_id"]}
