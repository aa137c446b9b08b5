"""Exact greedy argmax over the 256K-row output layer without reading all of it in fp32 every step.

At batch 1 on CPU a decoding step is dominated by `hidden @ wte.T`: 256,000 × hidden fp32 weights streamed
from memory for every token. Greedy decoding needs only the argmax. An int8 copy of `wte` (per-row scales,
`polylm.quantize.rows`) gives approximate logits `a` about 3-4x faster, and a rigorous per-token error bound `b`
says which tokens could still be the true argmax: those with a_j + b_j >= max_k(a_k - b_k). Only those are
recomputed in fp32, and the argmax among them is the fp32 argmax.

For the normalized row x (outlier channels removed, see `rows.py`), the kernel's input step s and a weight row
w_j with its int8 reconstruction ŵ_j of scale s_j, times the row's divisor:
    |a_j - x·w_j| <= s/2 · |ŵ_j|_1 + s_j/2 · |x|_1   (+ fp32 rounding, covered by a relative margin).
`tests/test_greedy_head.py` checks that the kernel's output stays within the first term on the machine it runs on.

The shortcut must never make decoding slower than the plain product. Its cost is bounded twice: when a row's
candidates are too many to gather cheaply, the step falls back to the full product; and after a fall-back the
sketch is skipped for an exponentially growing number of steps, so a model it cannot help pays it on about one
step in 64. Used only for plain greedy decoding of fp32 models on CPU where PyTorch still has fbgemm's ops.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import torch

from polylm.model import PolyLM, TiedEmbedding
from polylm.quantize.rows import RowInt8Matmul, fbgemm_available, quantize_rows

_HEADS: WeakKeyDictionary[PolyLM, Int8ArgmaxHead] = WeakKeyDictionary()

MIN_CANDIDATES = 256
"""Candidates of a row always worth recomputing; more than vocab / 64 of them fall back to the full product:
gathering a row costs about 6 times its share of that product, so the shortcut stays well below it."""
GATHER_ROWS = 512
"""Candidate rows copied out of the embedding at a time, into a buffer kept between steps."""
MAX_BACKOFF = 64
"""Most steps the sketch is skipped after it could not decide."""
RELATIVE_MARGIN = 1e-4
"""Covers fp32 rounding in the kernel's rescaling and in the exact product the result must equal."""


class Int8ArgmaxHead:
    """The int8 sketch of one tied embedding, valid while its weight is not modified."""

    def __init__(self, embedding: TiedEmbedding) -> None:
        self.embedding = embedding
        self.weight = weight = embedding.weight.detach()
        self.version = (weight._version, weight.data_ptr())
        self.skip = 0
        self.backoff = 1
        self.decided = self.undecided = 0
        """Steps the sketch decided, and steps it could not (each then paid the full product)."""
        with torch.no_grad():
            quantized, scales = quantize_rows(weight)
            self.row_l1 = torch.cat([block.abs().sum(dim=1, dtype=torch.float32) for block in quantized.split(16384)])
            self.row_l1 *= scales
            self.half_scales = scales / 2
            self.sketch = RowInt8Matmul(quantized, scales, lambda channels: weight[:, channels].T)
        self.max_candidates = max(MIN_CANDIDATES, weight.shape[0] // 64)
        self.gathered = torch.empty(GATHER_ROWS, weight.shape[1])
        self.workspace: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def is_current(self) -> bool:
        weight = self.embedding.weight
        return self.version == (weight._version, weight.data_ptr())

    @torch.no_grad()
    def argmax(self, hidden: torch.Tensor) -> torch.Tensor:
        """argmax_j hidden[r] · w_j for every row r, equal to the argmax of the full fp32 logits."""
        tokens = None
        if self.skip:
            self.skip -= 1
        elif torch.isfinite(hidden).all():
            tokens = self.certified_argmax(hidden)
            if tokens is None:
                self.undecided += 1
                self.skip, self.backoff = self.backoff, min(2 * self.backoff, MAX_BACKOFF)
            else:
                self.decided += 1
                self.backoff = 1
        return tokens if tokens is not None else self.embedding.attend(hidden).argmax(dim=-1)

    def certified_argmax(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """The fp32 argmax of each row from the sketch and its bound; None when the candidates are too many.

        Intermediate results go to buffers kept between steps: a fresh 1 MB tensor per operation costs more in page
        faults than the operation itself.
        """
        approx, rest, norms, step = self.sketch(hidden)
        bound, scratch, candidates = self._buffers(approx.shape)
        input_terms = norms * (step / 2 * (1 + RELATIVE_MARGIN))
        weight_terms = rest.abs().sum(dim=1, keepdim=True) * (1 + RELATIVE_MARGIN)
        torch.mul(self.row_l1, input_terms, out=bound).addcmul_(weight_terms, self.half_scales)
        bound.add_(torch.abs(approx, out=scratch), alpha=RELATIVE_MARGIN)
        threshold = torch.sub(approx, bound, out=scratch).amax(dim=1, keepdim=True)
        torch.ge(approx.add_(bound), threshold, out=candidates)
        if int(candidates.sum(dim=1).max()) > self.max_candidates:
            return None
        tokens = torch.empty(hidden.shape[0], dtype=torch.long)
        for row, row_candidates in enumerate(candidates):
            index = row_candidates.nonzero().flatten()
            best_value, best_token = -torch.inf, 0
            for chunk in index.split(GATHER_ROWS):
                rows = torch.index_select(self.weight, 0, chunk, out=self.gathered[: len(chunk)])
                values = torch.mv(rows, hidden[row])
                value, position = values.max(dim=0)
                if value > best_value:
                    best_value, best_token = float(value), int(chunk[position])
            tokens[row] = best_token
        return tokens

    def _buffers(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.workspace is None or self.workspace[0].shape != shape:
            self.workspace = (torch.empty(shape), torch.empty(shape), torch.empty(shape, dtype=torch.bool))
        return self.workspace


def int8_argmax_head(model: PolyLM) -> Int8ArgmaxHead | None:
    """The cached sketch of `model`'s embedding, rebuilt if the weights changed; None where it does not apply."""
    embedding = model.wte
    if not isinstance(embedding, TiedEmbedding) or not fbgemm_available():
        return None  # quantized embeddings have their own output layer
    weight = embedding.weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    head = _HEADS.get(model)
    if head is None or not head.is_current() or head.embedding is not embedding:
        head = _HEADS[model] = Int8ArgmaxHead(embedding)
    return head
