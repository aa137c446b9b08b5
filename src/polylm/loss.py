"""The training loss of the tied output layer, fused with the layer itself.

`logits = hidden @ wte.T` is the largest tensor of a training step (tokens × 256K vocabulary for PolyLM). Computing
it a chunk of tokens at a time, and the gradients of that chunk right away (softmax − one-hot), never holds the full
logits nor their gradient: the step moves far less memory (1.8× faster head on CPU for the tiny preset) and the
peak memory of the head drops from O(tokens × vocab) to O(chunk × vocab). The same idea as Liger-Kernel's
FusedLinearCrossEntropy, written for this model in plain torch.

Because the gradients are computed in the forward pass, the differentiable output is the mean loss over the
counted tokens; the per-token losses come out alongside, detached, for metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

IGNORE_INDEX = -100
CHUNK_TOKENS = 512


def _chunked(
    hidden: torch.Tensor,
    weight: torch.Tensor | None,
    targets: torch.Tensor,
    chunk: int,
    with_grads: bool,
    attend: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(mean loss, per-token losses, d mean / d hidden, d mean / d weight), one chunk of tokens at a time.

    The logits are `hidden @ weight.T`, or `attend(hidden)` for an output layer that is not a plain matrix (then
    without gradients).
    """
    counted = targets != IGNORE_INDEX
    count = max(int(counted.sum()), 1)
    losses = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if with_grads else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if with_grads else None
    for start in range(0, hidden.shape[0], chunk):
        rows = slice(start, start + chunk)
        part, part_targets, part_counted = hidden[rows], targets[rows].clamp(min=0), counted[rows]
        logits = (attend(part) if attend is not None else part @ weight.T).float()
        log_norm = torch.logsumexp(logits, dim=-1)
        picked = logits.gather(1, part_targets[:, None]).squeeze(1)
        losses[rows] = torch.where(part_counted, log_norm - picked, 0.0)
        if with_grads:
            grad_logits = logits.sub_(log_norm[:, None]).exp_()  # softmax, in place of the logits
            grad_logits[torch.arange(len(part_targets), device=hidden.device), part_targets] -= 1
            grad_logits.mul_((part_counted.float() / count)[:, None])
            grad_hidden[rows] = grad_logits.to(weight.dtype) @ weight
            grad_weight.addmm_(grad_logits.T, part.float())
    if grad_weight is not None:
        grad_weight = grad_weight.to(weight.dtype)
    return losses.sum() / count, losses, grad_hidden, grad_weight


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, losses, grad_hidden, grad_weight = _chunked(hidden, weight, targets, chunk, with_grads=True)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.mark_non_differentiable(losses)
        return mean, losses

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_losses: torch.Tensor) -> tuple:
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss.to(grad_hidden.dtype), grad_weight * grad_loss.to(grad_weight.dtype), None, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = CHUNK_TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token loss of `hidden @ weight.T` against `targets` (-100: not counted), and the per-token losses.

    hidden: (..., hidden_size); targets: the matching leading shape. Returns (mean over counted tokens, with
    gradients; per-token losses in fp32, 0 where not counted, without gradients).
    """
    flat_hidden, flat_targets = hidden.flatten(0, -2), targets.flatten()
    with torch.autocast(hidden.device.type, enabled=False):
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            mean, losses = _LinearCrossEntropy.apply(flat_hidden, weight, flat_targets, chunk)
        else:
            mean, losses, _, _ = _chunked(flat_hidden, weight, flat_targets, chunk, with_grads=False)
    return mean, losses.view(targets.shape)


def logits_cross_entropy(
    hidden: torch.Tensor,
    attend: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    chunk: int = CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`linear_cross_entropy` through any output layer (`attend`: hidden -> logits), without gradients: how quantized
    models, whose output layer is not a plain matrix, are scored."""
    flat_hidden, flat_targets = hidden.flatten(0, -2), targets.flatten()
    mean, losses, _, _ = _chunked(flat_hidden, None, flat_targets, chunk, with_grads=False, attend=attend)
    return mean, losses.view(targets.shape)
