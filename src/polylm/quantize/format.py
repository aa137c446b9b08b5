"""The quantized model directory: what `polylm quantize` writes and `load_model` reads.

    config.json               the source's transformers config, with model_type "polylm_quantized",
                              architectures ["PolyLMQuantizedForCausalLM"] and a quantization_config (below)
    model.safetensors         or model-0000k-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.model, ...      copied from the source
    generation_config.json    copied from the source when it has one

Tensors, named as in the source with the `transformer.` prefix, weights as (out, in):
    h.N.{attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj}.qweight
        8 bits: int8 (out, in), symmetric, -127..127
        4 bits: uint8 (out, in / 2), two values 0..15 per byte, the even input channel in the low nibble
    ....scales     8 bits: F32 (out,), bf16-exact; 4 bits: BF16 (out, in / group_size)
    ....zeros      4 bits only: BF16 (out, in / group_size); weight = (value - 8) * scale + zero, the CPU
                   int4 kernel's own formula, so the stored numbers are exactly the ones it computes with
    ....bias, wpe.weight, ln_1/ln_2/ln_f weights and biases: as in the source
    wte.qweight    int8 (vocab, hidden), wte.scales F32 (vocab,): the tied embedding, int8 in both bit widths

quantization_config: {"quant_method": "polylm", "format_version": 1, "bits": 8 | 4, "group_size": null | 32..256,
"embedding_bits": 8}. A reader refuses a format_version newer than its own.
"""

from __future__ import annotations

import torch

from polylm.errors import PolyLMError
from polylm.quantize.layers import GROUP_SIZES

QUANT_METHOD = "polylm"
FORMAT_VERSION = 1
ARCHITECTURE = "PolyLMQuantizedForCausalLM"
LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def is_quantized_weight(name: str) -> bool:
    """Whether the parameter `name` (polylm's naming) is stored quantized: the blocks' linears and the embedding."""
    return name == "wte.weight" or name.endswith(tuple(f"{linear}.weight" for linear in LINEARS))


DEFAULT_GROUP_SIZE = 64


def check_settings(bits: int, group_size: int | None) -> int | None:
    """The group size to use for `bits`, refusing what the kernels cannot run (named as the CLI flags)."""
    if bits not in (8, 4):
        raise PolyLMError(f"--bits must be 8 or 4, got {bits}")
    if bits == 8:
        if group_size is not None:
            raise PolyLMError("--group-size applies to --bits 4 (int8 weights have one scale per output channel)")
        return None
    group_size = DEFAULT_GROUP_SIZE if group_size is None else group_size
    if group_size not in GROUP_SIZES:
        raise PolyLMError(f"--group-size must be one of {', '.join(map(str, GROUP_SIZES))}, got {group_size}")
    return group_size


def quantization_config(bits: int, group_size: int | None) -> dict:
    return {
        "quant_method": QUANT_METHOD,
        "format_version": FORMAT_VERSION,
        "bits": bits,
        "group_size": group_size,
        "embedding_bits": 8,
    }


def quantize_groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4-bit asymmetric quantization per group of input channels: (nibbles, scales, zeros) as stored.

    The group's range [min, max] maps onto values 0..15; scale and zero are rounded to bf16 before the values are
    chosen, so that a value's weight is exactly what the kernel computes.
    """
    out_features, in_features = weight.shape
    nibbles = torch.empty(out_features, in_features // 2, dtype=torch.uint8)
    scales = torch.empty(out_features, in_features // group_size, dtype=torch.bfloat16)
    zeros = torch.empty_like(scales)
    for rows in torch.arange(out_features).split(4096):
        groups = weight[rows].float().view(len(rows), -1, group_size)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scale = ((high - low) / 15).clamp(min=1e-10).bfloat16()
        zero = (low + 8 * scale.float()).bfloat16()
        values = torch.round((groups - zero.float()[..., None]) / scale.float()[..., None] + 8).clamp(0, 15)
        values = values.to(torch.uint8).view(len(rows), in_features)
        nibbles[rows] = values[:, 0::2] | (values[:, 1::2] << 4)
        scales[rows], zeros[rows] = scale, zero
    return nibbles, scales, zeros


def dequantize_groups(nibbles: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The fp32 weights a 4-bit tensor stands for (for tests, and for anyone reading the format elsewhere)."""
    values = torch.stack([nibbles & 0x0F, nibbles >> 4], dim=-1).view(nibbles.shape[0], -1).float()
    grouped = values.view(values.shape[0], scales.shape[1], -1)
    return ((grouped - 8) * scales.float()[..., None] + zeros.float()[..., None]).view(values.shape)
