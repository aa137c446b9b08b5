"""Load a directory written by `polylm quantize` as a PolyLM whose layers are the quantized modules."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from polylm.errors import PolyLMError
from polylm.hf_checkpoint import (
    DTYPES,
    QUANTIZED_MODEL_TYPE,
    Scratch,
    check_tokenizer,
    read_config,
    read_hf_config,
    stored_tensors,
)
from polylm.inference import INFERENCE_ONLY
from polylm.model import PolyLM
from polylm.quantize.format import FORMAT_VERSION, QUANT_METHOD, is_quantized_weight
from polylm.quantize.layers import GROUP_SIZES, Int4Linear, Int8Embedding, Int8Linear

KERNELS = ("_weight_int8pack_mm", "_weight_int4pack_mm_for_cpu", "_convert_weight_to_int4pack_for_cpu")


def is_quantized(model_dir: Path) -> bool:
    return read_hf_config(model_dir).get("model_type") == QUANTIZED_MODEL_TYPE


def read_quantization(model_dir: Path) -> tuple[int, int | None]:
    """(bits, group size) of a quantized directory, refusing formats this polylm cannot read."""
    source = model_dir / "config.json"
    settings = read_hf_config(model_dir).get("quantization_config")
    if not isinstance(settings, dict) or settings.get("quant_method") != QUANT_METHOD:
        raise PolyLMError(f"{source}: key 'quantization_config' is missing or not polylm's")
    version = settings.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise PolyLMError(f"{source}: key 'quantization_config.format_version' must be a positive integer")
    if version > FORMAT_VERSION:
        raise PolyLMError(
            f"{source}: written by a newer polylm (quantized format {version}; this one reads up to "
            f"{FORMAT_VERSION}): upgrade polylm"
        )
    bits, group_size = settings.get("bits"), settings.get("group_size")
    if bits not in (8, 4) or (bits == 4 and group_size not in GROUP_SIZES):
        raise PolyLMError(f"{source}: key 'quantization_config' has bits {bits!r}, group_size {group_size!r}")
    return bits, group_size


def _expected_shapes(model: PolyLM, bits: int, group_size: int | None) -> dict[str, tuple[int, ...]]:
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    for name in [n for n in shapes if is_quantized_weight(n)]:
        out_features, in_features = shapes.pop(name)
        prefix = name.removesuffix(".weight")
        if name == "wte.weight" or bits == 8:
            shapes[f"{prefix}.qweight"] = (out_features, in_features)
            shapes[f"{prefix}.scales"] = (out_features,)
        else:
            shapes[f"{prefix}.qweight"] = (out_features, in_features // 2)
            shapes[f"{prefix}.scales"] = shapes[f"{prefix}.zeros"] = (out_features, in_features // group_size)
    return shapes


class _BiasOnly(nn.Module):
    """Holds a quantized linear's bias until its weights are read, so that no fp32 weight is ever allocated."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.bias = nn.Parameter(bias)


def _install(model: PolyLM, prefix: str, fields: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    """Put the quantized module for `prefix` in place, as soon as all its tensors are read."""
    if prefix == "wte":
        model.wte = Int8Embedding(fields["qweight"], fields["scales"], dtype)
        return
    owner_name, _, attribute = prefix.rpartition(".")
    owner = model.get_submodule(owner_name)
    bias = getattr(owner, attribute).bias
    if "zeros" in fields:
        module = Int4Linear(fields["qweight"], fields["scales"], fields["zeros"], bias)
    else:
        module = Int8Linear(fields["qweight"], fields["scales"], bias)
    setattr(owner, attribute, module)


def load_quantized(model_dir: Path, dtype: str | torch.dtype | None, device: str | torch.device) -> PolyLM:
    """The quantized model of `model_dir`, on the CPU, with activations in `dtype` (default float32)."""
    bits, group_size = read_quantization(model_dir)
    if torch.device(device).type != "cpu":
        raise PolyLMError(
            f"{model_dir}: quantized models run on the CPU (their kernels are CPU ones); got --device {device}"
        )
    missing = [kernel for kernel in KERNELS if not hasattr(torch.ops.aten, kernel)]
    if missing:
        raise PolyLMError(f"this PyTorch ({torch.__version__}) lacks {', '.join(missing)}, needed by quantized models")
    config = read_config(model_dir)
    check_tokenizer(model_dir, config)
    activation_dtype = DTYPES[dtype] if isinstance(dtype, str) else (dtype or torch.float32)
    with torch.device("meta"):
        model = PolyLM(config)
        expected = _expected_shapes(model, bits, group_size)
        for name in [n for n in expected if n.endswith(".qweight") and n != "wte.qweight"]:
            owner_name, _, attribute = name.removesuffix(".qweight").rpartition(".")
            owner = model.get_submodule(owner_name)
            setattr(owner, attribute, _BiasOnly(getattr(owner, attribute).bias))
        model.wte = nn.Identity()
    model.to(activation_dtype).to_empty(device="cpu")  # only what stays unquantized: biases, norms, positions
    parameters = dict(model.named_parameters())
    parts: dict[str, dict[str, torch.Tensor]] = {}
    scratch = Scratch()
    with torch.no_grad():
        for tensor in stored_tensors(model_dir, expected):
            prefix, _, field = tensor.name.rpartition(".")
            if field in ("qweight", "scales", "zeros"):
                parts.setdefault(prefix, {})[field] = tensor.read(tensor.dtype, scratch)
            else:
                tensor.copy_to(parameters[tensor.name], scratch)
            if prefix in parts and len(parts[prefix]) == (2 if bits == 8 or prefix == "wte" else 3):
                _install(model, prefix, parts.pop(prefix), activation_dtype)
    model.config = config.replace(dtype=str(activation_dtype).removeprefix("torch."))
    setattr(model, INFERENCE_ONLY, True)
    return model.eval()
