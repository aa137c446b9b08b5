"""Exact greedy argmax over the 256K-row output layer without reading all of it in fp32 every step.

At batch 1 on CPU a decoding step is dominated by `hidden @ wte.T`: 256,000 × hidden fp32 weights streamed
from memory for every token. Greedy decoding needs only the argmax. An int8 copy of `wte` (per-row scales,
fbgemm's dynamic quantized linear) gives approximate logits `a` about 6x faster, and a rigorous per-row error
bound `b` says which tokens could still be the true argmax: those with a_j + b_j >= max_k(a_k - b_k). Only
those are recomputed in fp32 (usually a handful), and the argmax among them is the fp32 argmax.

The bound, for x the hidden state, w_j a row, ŵ_j its int8 reconstruction with scale s_j, x̂ the 8-bit
quantized x with step e_x: |a_j - x·w_j| <= e_x/2 · |ŵ_j|_1 + s_j/2 · |x|_1 (plus fp32 rounding). It is
used with a 2x margin and with the step of a 7-bit quantization of x (the worse of fbgemm's two ranges).
Used only for plain greedy decoding of fp32 models on CPU where PyTorch still has the quantized ops.
"""

from __future__ import annotations

import warnings
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F

from polylm.model import PolyLM

_HEADS: WeakKeyDictionary[PolyLM, Int8ArgmaxHead] = WeakKeyDictionary()


def _available() -> bool:
    ops = torch.ops.quantized
    return (
        hasattr(ops, "linear_dynamic")
        and hasattr(ops, "linear_prepack")
        and "fbgemm" in torch.backends.quantized.supported_engines
    )


class Int8ArgmaxHead:
    """The int8 sketch of one tied embedding, valid while that tensor is not modified."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.version = (weight._version, weight.data_ptr())
        with torch.no_grad():
            scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
            quantized = torch.empty(weight.shape, dtype=torch.int8)
            for rows in torch.arange(weight.shape[0]).split(16384):  # bounded temporaries, even for 13B
                quantized[rows] = torch.round(weight[rows] / scales[rows, None]).clamp(-127, 127).to(torch.int8)
            self.row_l1 = quantized.abs().sum(dim=1, dtype=torch.float32) * scales
            self.half_scales = scales / 2
            zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # the quantized ops are deprecated in favour of torchao
                warnings.simplefilter("ignore")
                packed_input = torch._make_per_channel_quantized_tensor(quantized, scales.double(), zero_points, 0)
                self.packed = torch.ops.quantized.linear_prepack(packed_input, None)

    def is_current(self) -> bool:
        return self.version == (self.weight._version, self.weight.data_ptr())

    @torch.no_grad()
    def argmax(self, hidden: torch.Tensor) -> torch.Tensor:
        """argmax_j hidden[r] · w_j for every row r, equal to the argmax of the full fp32 logits."""
        if not torch.isfinite(hidden).all():
            return F.linear(hidden, self.weight).argmax(dim=-1)
        approx = torch.ops.quantized.linear_dynamic(hidden, self.packed)
        input_step = (hidden.clamp(min=0).amax(dim=1) - hidden.clamp(max=0).amin(dim=1)) / 127
        bound = 2 * (input_step[:, None] / 2 * self.row_l1 + self.half_scales * hidden.abs().sum(dim=1)[:, None])
        bound = bound + 1e-5 * (1 + approx.abs())
        threshold = (approx - bound).amax(dim=1, keepdim=True)
        tokens = []
        for row, candidates in enumerate(approx + bound >= threshold):
            index = candidates.nonzero().flatten()
            exact = F.linear(hidden[row : row + 1], self.weight[index])
            tokens.append(index[exact[0].argmax()])
        return torch.stack(tokens)


def int8_argmax_head(model: PolyLM) -> Int8ArgmaxHead | None:
    """The cached sketch of `model`'s embedding, rebuilt if the weights changed; None where it does not apply."""
    weight = model.wte.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not _available():
        return None
    head = _HEADS.get(model)
    if head is None or not head.is_current() or head.weight is not weight:
        head = _HEADS[model] = Int8ArgmaxHead(weight)
    return head
