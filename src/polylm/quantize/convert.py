"""`polylm quantize`: a model directory in, a quantized one out, one source tensor at a time.

The source is read shard by shard and tensor by tensor (`checkpoint.stored_tensors`); each weight is quantized
in blocks of rows and added to the output shard being built, which is written once it reaches `max_shard_bytes`.
Peak memory is about one output shard plus the largest source tensor in fp32, never the whole model: PolyLM-13B
(28 GB in bf16) quantizes on a 24 GiB machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from polylm.errors import PolyLMError
from polylm.hf_checkpoint import (
    QUANTIZED_MODEL_TYPE,
    WEIGHT_INDEXES,
    Scratch,
    check_tokenizer,
    read_config,
    read_hf_config,
    stored_tensors,
)
from polylm.model import PolyLM
from polylm.quantize.format import (
    ARCHITECTURE,
    check_settings,
    is_quantized_weight,
    quantization_config,
    quantize_groups,
)
from polylm.quantize.load import is_quantized
from polylm.quantize.rows import quantize_rows
from polylm.tokenizer import TOKENIZER_FILE

COPIED_FILES = (
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer_training.json",
    "generation_config.json",
)


def _quantized_tensors(name: str, weight: torch.Tensor, bits: int, group_size: int | None) -> dict[str, torch.Tensor]:
    """The stored tensors of one source weight (polylm orientation, (out, in))."""
    prefix = f"transformer.{name.removesuffix('.weight')}"
    if name == "wte.weight" or bits == 8:
        quantized, scales = quantize_rows(weight)
        return {f"{prefix}.qweight": quantized, f"{prefix}.scales": scales}
    nibbles, scales, zeros = quantize_groups(weight, group_size)
    return {f"{prefix}.qweight": nibbles, f"{prefix}.scales": scales, f"{prefix}.zeros": zeros}


def _check_group_size(config, group_size: int | None) -> None:
    if group_size is None:
        return
    for width in (config.hidden_size, config.ffn_size):
        if width % group_size:
            raise PolyLMError(
                f"--group-size {group_size} does not divide the model's input width {width}; choose one that does"
            )


class _ShardWriter:
    """Output shards of at most `max_bytes`, named like transformers' (renamed to -of-N once N is known)."""

    def __init__(self, out: Path, max_bytes: int) -> None:
        self.out, self.max_bytes = out, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.files: list[tuple[Path, list[str]]] = []

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self.flush()
        for key, tensor in tensors.items():
            self.pending[key] = tensor.contiguous()
        self.pending_bytes += size

    def flush(self) -> None:
        if not self.pending:
            return
        path = self.out / f".shard-{len(self.files) + 1:05d}.safetensors"
        save_file(self.pending, str(path), metadata={"format": "pt"})
        self.files.append((path, list(self.pending)))
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> tuple[list[str], int]:
        """Rename the shards to their final names, write the index if there are several; (file names, bytes)."""
        self.flush()
        total = sum(path.stat().st_size for path, _ in self.files)
        if len(self.files) == 1:
            names = ["model.safetensors"]
        else:
            names = [f"model-{i:05d}-of-{len(self.files):05d}.safetensors" for i in range(1, len(self.files) + 1)]
        weight_map = {}
        for (path, keys), name in zip(self.files, names, strict=True):
            path.rename(self.out / name)
            weight_map.update(dict.fromkeys(keys, name))
        if len(names) > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.out / WEIGHT_INDEXES[0]).write_text(json.dumps(index, indent=2) + "\n")
        return names, total


def quantize_model(
    source: Path, out: Path, bits: int, group_size: int | None = None, max_shard_bytes: int = 2 * 1024**3
) -> dict:
    """Write the quantized form of the model directory `source` to `out`; returns a summary."""
    group_size = check_settings(bits, group_size)
    config = read_config(source)
    if is_quantized(source):
        raise PolyLMError(f"{source}: already quantized; quantize the original model")
    hf = read_hf_config(source)
    check_tokenizer(source, config)
    _check_group_size(config, group_size)
    if out.resolve() == source.resolve():
        raise PolyLMError(f"--out {out} is the source directory; choose another")
    if not out.parent.is_dir():
        raise PolyLMError(f"--out {out}: parent directory {out.parent} does not exist")
    out.mkdir(exist_ok=True)
    for stale in [*out.glob("model*.safetensors*"), *out.glob(".shard-*.safetensors")]:
        stale.unlink()

    with torch.device("meta"):
        shapes = {name: tuple(p.shape) for name, p in PolyLM(config).named_parameters()}
    writer = _ShardWriter(out, max_shard_bytes)
    scratch = Scratch()
    source_bytes = 0
    with torch.no_grad():
        for tensor in stored_tensors(source, shapes):
            source_bytes += tensor.entry_bytes
            if is_quantized_weight(tensor.name):
                weight = tensor.read(tensor.dtype, scratch)
                writer.add(_quantized_tensors(tensor.name, weight, bits, group_size))
                del weight
            else:
                writer.add({f"transformer.{tensor.name}": tensor.read(tensor.dtype, scratch)})
    names, total = writer.finish()

    quantized = {
        **hf,
        "model_type": QUANTIZED_MODEL_TYPE,
        "architectures": [ARCHITECTURE],
        "quantization_config": quantization_config(bits, group_size),
    }
    (out / "config.json").write_text(json.dumps(quantized, indent=2) + "\n")
    for name in COPIED_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    return {"out": str(out), "bits": bits, "group_size": group_size, "files": names, "bytes": total,
            "source_bytes": source_bytes}  # fmt: skip
