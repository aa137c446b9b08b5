"""Int8 products against a matrix quantized per row, through fbgemm's dynamic quantized linear.

Two users: the exact greedy shortcut of fp32 models (`polylm.generate.greedy_head`), which treats these products
as a sketch with an error bound, and the output layer of quantized models (`polylm.quantize.layers`), whose
logits they are.

What the kernel does, and so what the bound must follow: fbgemm quantizes its whole input with ONE scale (per
tensor, not per row), 7-bit here (`reduce_range`, so that AVX2 kernels without VNNI cannot saturate their 16-bit
pair sums), with the step s = (max(x, 0) - min(x, 0)) / 127 over the whole batch. So each row is divided by its
own largest magnitude first (which the result is multiplied back by), and a row with a small range next to one
with a large range still gets a fine step. Trained models' final hidden states also carry a few channels 5-15x
their row's rms (LLM.int8()'s outlier features); one step for the whole row would be too coarse for every other
channel, so those channels are taken out and multiplied in fp32 through a cached copy of their weight columns.
They are the same channels from token to token, so the cache soon stops growing.
"""

from __future__ import annotations

import warnings

import torch

INPUT_LEVELS = 127
"""fbgemm's unsigned input range with reduce_range: 0..127."""
OUTLIER_RATIO = 4.0
"""A channel above this many times its row's rms is multiplied exactly rather than quantized."""
MAX_OUTLIER_CHANNELS = 32


def fbgemm_available() -> bool:
    ops = torch.ops.quantized
    return (
        hasattr(ops, "linear_dynamic")
        and hasattr(ops, "linear_prepack")
        and "fbgemm" in torch.backends.quantized.supported_engines
    )


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row (-127..127) and the fp32 row scales, in bounded temporaries even for 13B.

    The scales are rounded to bf16 first, so that kernels that take bf16 scales compute with the same weights.
    """
    scales = torch.empty(weight.shape[0])
    quantized = torch.empty(weight.shape, dtype=torch.int8)
    for start in range(0, weight.shape[0], 16384):
        block = weight[start : start + 16384].float()
        scale = (block.abs().amax(dim=1) / 127).clamp(min=1e-12).bfloat16().float()
        quantized[start : start + 16384] = torch.round(block / scale[:, None]).clamp(-127, 127).to(torch.int8)
        scales[start : start + 16384] = scale
    return quantized, scales


def prepack(quantized: torch.Tensor, scales: torch.Tensor) -> torch.ScriptObject:
    """fbgemm's packed form of per-row int8 weights, for `torch.ops.quantized.linear_dynamic`."""
    zero_points = torch.zeros(quantized.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # the quantized ops are deprecated in favour of torchao
        warnings.simplefilter("ignore")
        packed_input = torch._make_per_channel_quantized_tensor(quantized, scales.double(), zero_points, 0)
        return torch.ops.quantized.linear_prepack(packed_input, None)


def input_step(x: torch.Tensor) -> torch.Tensor:
    """The quantization step fbgemm's dynamic linear uses for all of `x` (one scale for the tensor)."""
    return (x.max().clamp(min=0) - x.min().clamp(max=0)) / INPUT_LEVELS


def normalized_rows(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row divided by its largest magnitude (1 for an all-zero row), and those divisors."""
    norms = hidden.abs().amax(dim=1, keepdim=True)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    return hidden / norms, norms


class RowInt8Matmul:
    """x @ W.T for a matrix W held as per-row int8 (fbgemm-packed), with outlier channels in fp32.

    `columns(channels)` must return W[:, channels] as float rows (one per channel): the exact weights for a model
    whose W is the fp32 matrix, the dequantized int8 columns for a model whose W is the int8 matrix.
    """

    def __init__(self, quantized: torch.Tensor, scales: torch.Tensor, columns) -> None:
        self.packed = prepack(quantized, scales)
        self.columns = columns
        self.outlier_channels: list[int] = []
        self.outlier_rows = torch.empty(MAX_OUTLIER_CHANNELS, quantized.shape[0])
        """Row i: the weight column of outlier_channels[i], contiguous."""

    def split_outliers(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden with its outlier channels zeroed, their exact contribution to the product)."""
        rms = hidden.pow(2).mean(dim=1, keepdim=True).sqrt()
        wide = (hidden.abs() > OUTLIER_RATIO * rms).any(dim=0).nonzero().flatten().tolist()
        room = MAX_OUTLIER_CHANNELS - len(self.outlier_channels)
        new = [c for c in wide if c not in self.outlier_channels][:room]
        if new:
            start = len(self.outlier_channels)
            self.outlier_rows[start : start + len(new)] = self.columns(new)
            self.outlier_channels += new
        if not self.outlier_channels:
            return hidden, torch.zeros((), dtype=hidden.dtype)
        channels = torch.tensor(self.outlier_channels)
        exact = hidden[:, channels] @ self.outlier_rows[: len(channels)]
        return hidden.index_fill(1, channels, 0.0), exact

    def __call__(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """(approximate product, hidden without outliers, the row divisors, the input step of the normalized rows).

        The last three are what an error bound needs: |approx - rest · ŵ_j| <= divisor · step/2 · |ŵ_j|_1.
        """
        rest, exact_part = self.split_outliers(hidden.float())
        x, norms = normalized_rows(rest)
        approx = torch.ops.quantized.linear_dynamic(x, self.packed, True).mul_(norms).add_(exact_part)
        return approx, rest, norms, float(input_step(x))
