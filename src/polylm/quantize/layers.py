"""The modules of a quantized PolyLM: int8 or int4 linear layers and an int8 tied embedding.

- `Int8Linear`: int8 weights with one bf16-exact scale per output channel; PyTorch's weight-only kernel
  `_weight_int8pack_mm` on bf16 activations (the released models' own activation dtype).
- `Int4Linear`: 4-bit weights, asymmetric per group of `group_size` input channels (a scale and a zero per group);
  PyTorch's `_weight_int4pack_mm_for_cpu` (the CPU "tinygemm" kernel) on bf16 activations.
- `Int8Embedding`: the 256K-row tied embedding in int8 per row, in both bit widths (as llama.cpp's Q4_K_M keeps
  its output layer at 6 bits): rows are dequantized for the input lookup, and the output layer is fbgemm's int8
  product (`rows.RowInt8Matmul`: activations at 7 bits per row, outlier channels exact), about 3x faster than
  the weight-only kernel for that shape and with fp32 logits, so argmax ties of bf16 rounding do not arise.
The residual stream, LayerNorms, attention and position embeddings stay in the model's activation dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from polylm.quantize.rows import RowInt8Matmul, fbgemm_available

GROUP_SIZES = (32, 64, 128, 256)
"""What the int4 kernel accepts."""


def _bias(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = y.to(x.dtype)
    return y.add_(bias) if bias is not None else y


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + bias, q int8 (out, in), scale (out,)."""

    def __init__(self, quantized: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.quantized, self.scales, self.bias = quantized, scales.bfloat16(), bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).bfloat16()
        y = torch.ops.aten._weight_int8pack_mm(flat, self.quantized, self.scales)
        return _bias(x, y, self.bias).view(*x.shape[:-1], -1)


class Int4Linear(nn.Module):
    """y = x @ W.T + bias, W[o, i] = (q[o, i] - 8) * scale[o, g] + zero[o, g] with g = i // group_size, q in 0..15."""

    def __init__(self, nibbles: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bias) -> None:
        super().__init__()
        values = torch.stack([nibbles & 0x0F, nibbles >> 4], dim=-1).view(nibbles.shape[0], -1).to(torch.int32)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(values, 1)
        self.group_size = values.shape[1] // scales.shape[1]
        self.scales_and_zeros = torch.stack([scales.t(), zeros.t()], dim=-1).bfloat16().contiguous()
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).bfloat16()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scales_and_zeros)
        return _bias(x, y, self.bias).view(*x.shape[:-1], -1)


class Int8Embedding(nn.Module):
    """The tied embedding as int8 rows: lookups dequantize, `attend` is the int8 output layer."""

    def __init__(self, quantized: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = quantized.shape
        self.quantized, self.scales, self.dtype = quantized, scales.float(), dtype
        self.product = RowInt8Matmul(quantized, self.scales, self.columns) if fbgemm_available() else None

    def columns(self, channels: list[int]) -> torch.Tensor:
        """The dequantized weight columns of `channels`, one per row."""
        return (self.quantized[:, channels].float() * self.scales[:, None]).T

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.quantized[ids].to(self.dtype) * self.scales[ids].unsqueeze(-1).to(self.dtype)

    def attend(self, hidden: torch.Tensor) -> torch.Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1])
        if self.product is not None:
            logits = self.product(flat)[0]
        else:  # no fbgemm (e.g. ARM builds): the weight-only kernel, bf16 logits
            scales = self.scales.bfloat16()
            logits = torch.ops.aten._weight_int8pack_mm(flat.bfloat16(), self.quantized, scales).float()
        return logits.view(*hidden.shape[:-1], -1).to(hidden.dtype)
