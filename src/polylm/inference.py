"""A model made ready for decoding on the CPU: its linear layers and its tied output layer through oneDNN.

PyTorch runs fp32 `F.linear` on x86 CPUs through MKL. For the shapes of decoding (1 to 8 rows against a large
weight) MKL's speed depends on the machine and the number of rows far more than the work does: on an AMD EPYC
(AVX-512, 2 threads) the 256,000 × 384 output layer took 41 ms for one row and 66-92 ms for 2-8 rows. oneDNN,
which PyTorch also ships (it is what torch.compile's CPU freezing path uses), dispatches on the instruction sets
rather than the vendor and took 15-22 ms for the same products; the blocks' linears (weights reordered once into
its blocked layout) were 1.5-4x faster at every batch size measured, fp32 and bf16 alike. Results are fp32 (or
bf16) as before; only the summation order changes, as it does between any two BLAS builds.

`prepare_for_inference` swaps modules in place: the model then decodes, scores and serves as before but can no
longer be trained or saved (`save_model` refuses it). Models off the CPU, and torch builds without oneDNN, are
left as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from polylm.model import PolyLM, TiedEmbedding

INFERENCE_ONLY = "_polylm_inference_only"
"""Attribute set on a model whose modules were swapped for inference; `save_model` refuses such a model."""


def onednn_available() -> bool:
    ops = torch.ops.mkldnn
    try:
        return torch.backends.mkldnn.is_available() and bool(ops._linear_pointwise and ops._reorder_linear_weight)
    except (AttributeError, RuntimeError):
        return False


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias through oneDNN; `weight` dense or reordered by `_reorder_linear_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class PackedLinear(nn.Module):
    """An `nn.Linear` whose weight was reordered once into oneDNN's blocked layout (for decoding, batch hint 1)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, self.packed, self.bias)


class OneDNNEmbedding(TiedEmbedding):
    """The tied embedding with `attend` through oneDNN on the dense weight, which the lookups keep using."""

    def attend(self, hidden: torch.Tensor) -> torch.Tensor:
        return onednn_linear(hidden, self.weight, None)


def _swap_embedding(model: PolyLM) -> None:
    old = model.wte
    new = OneDNNEmbedding(old.num_embeddings, old.embedding_dim, _weight=old.weight.detach())
    new.weight = old.weight  # the same Parameter: no copy of the 256K-row matrix
    model.wte = new


def prepare_for_inference(model: PolyLM) -> PolyLM:
    """`model` in eval mode with oneDNN kernels where they apply (CPU, fp32 or bf16); idempotent, in place."""
    model.eval()
    if getattr(model, INFERENCE_ONLY, False):
        return model
    dense = type(model.wte) is TiedEmbedding
    if not dense or model.device.type != "cpu" or model.activation_dtype not in (torch.float32, torch.bfloat16):
        return model
    if not onednn_available():
        return model
    for block in model.h:
        for owner, name in ((block.attn, "c_attn"), (block.attn, "c_proj"), (block.mlp, "c_fc"), (block.mlp, "c_proj")):
            linear = getattr(owner, name)
            if type(linear) is nn.Linear:
                setattr(owner, name, PackedLinear(linear))
    _swap_embedding(model)
    setattr(model, INFERENCE_ONLY, True)
    return model
