"""Full-catalogue softmax cross-entropy of a linear output layer, in cache-sized tiles.

Every sequential target (SASRec, BERT4Rec, GRU4Rec, NARM, STAMP) trains on the softmax
cross-entropy of the next (or masked) item over the whole catalogue, with logits
``hidden @ weight.T (+ bias)``. Written as ``F.cross_entropy(logits, targets)``, a batch of
SASRec's ML-1M preset (about 25,000 positions x 3,706 items) streams a 380 MB logit matrix, its
log-softmax and their gradients through memory several times; on a CPU the log-softmax and its
backward alone were a quarter of the step. :func:`catalogue_cross_entropy` computes the same mean
loss and gradients tile by tile: a tile is :data:`ROW_BLOCK` positions by :data:`COLUMN_BLOCK`
items, so that its logits, the positions' hidden states and the items' output vectors all stay
in cache. The forward pass keeps a running log-sum-exp over each row block's item tiles (the
online softmax normaliser of Milakov & Gimelshein 2018) and only each row's log-partition for the
backward pass; the backward pass recomputes each tile's logits, turns them into the softmax in
place and adds its share of both gradients, then subtracts the one-hot part by index. Tiling the
items too matters on large catalogues: row blocks alone (the previous code, kept in
``benchmarks/catalogue_ce.py``) read the whole output layer once per 16 rows on Amazon Beauty's
54,542 items. One matrix product more than the plain path, no ``[P, N]`` tensor held.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROW_BLOCK = 512
"""Positions of one tile."""

COLUMN_BLOCK = 512
"""Catalogue items of one tile: a tile's logits are 1 MB of float32."""


def _tile_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor:
    """``hidden @ weight[lo:hi].T (+ bias[lo:hi])``: one tile's logits (``hidden`` already the row block)."""
    logits = hidden @ weight[lo:hi].t()
    if bias is not None:
        logits += bias[lo:hi]
    return logits


def _log_partition(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``logsumexp(hidden @ weight.T + bias, dim=1)`` for one row block, item tile by item tile:
    a running maximum and a running sum of exponentials rescaled whenever the maximum grows."""
    items = weight.shape[0]
    logits = _tile_logits(hidden, weight, bias, 0, min(COLUMN_BLOCK, items))
    running_max = logits.amax(dim=1)
    running_sum = logits.sub_(running_max[:, None]).exp_().sum(dim=1)
    for lo in range(COLUMN_BLOCK, items, COLUMN_BLOCK):
        logits = _tile_logits(hidden, weight, bias, lo, min(lo + COLUMN_BLOCK, items))
        new_max = torch.maximum(running_max, logits.amax(dim=1))
        running_sum.mul_((running_max - new_max).exp_())
        running_sum += logits.sub_(new_max[:, None]).exp_().sum(dim=1)
        running_max = new_max
    return running_max + running_sum.log_()


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T + bias`` against ``targets``, by tiles."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rows = hidden.shape[0]
        log_partition = hidden.new_empty(rows)
        for lo in range(0, rows, ROW_BLOCK):
            hi = min(lo + ROW_BLOCK, rows)
            log_partition[lo:hi] = _log_partition(hidden[lo:hi], weight, bias)
        target_logits = (hidden * weight[targets]).sum(dim=1)
        if bias is not None:
            target_logits += bias[targets]
        ctx.save_for_backward(hidden, weight, bias, targets, log_partition)
        return (log_partition - target_logits).sum() / rows

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor):  # noqa: D102
        hidden, weight, bias, targets, log_partition = ctx.saved_tensors
        rows, items = hidden.shape[0], weight.shape[0]
        scale = grad_outputs[0] / rows
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        grad_bias = torch.zeros_like(bias) if need_bias and bias is not None else None
        for lo in range(0, rows, ROW_BLOCK):
            hi = min(lo + ROW_BLOCK, rows)
            block, block_partition = hidden[lo:hi], log_partition[lo:hi, None]
            for first in range(0, items, COLUMN_BLOCK):
                last = min(first + COLUMN_BLOCK, items)
                softmax = _tile_logits(block, weight, bias, first, last).sub_(block_partition).exp_().mul_(scale)
                if grad_hidden is not None:
                    grad_hidden[lo:hi].addmm_(softmax, weight[first:last])
                if grad_weight is not None:
                    grad_weight[first:last].addmm_(softmax.t(), block)
                if grad_bias is not None:
                    grad_bias[first:last] += softmax.sum(dim=0)
        # the one-hot part of softmax - onehot, by index
        if grad_hidden is not None:
            grad_hidden.sub_(weight[targets] * scale)
        if grad_weight is not None:
            grad_weight.index_add_(0, targets, hidden * -scale)
        if grad_bias is not None:
            grad_bias.index_add_(0, targets, scale.neg().expand(rows).to(grad_bias.dtype).clone())
        return grad_hidden, grad_weight, grad_bias, None


def blocked(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`catalogue_cross_entropy` takes the blocked CPU path for these operands
    (float32 on a CPU, no autocast); elsewhere (a GPU, bf16) the plain path is as fast."""
    return (
        hidden.device.type == "cpu"
        and hidden.dtype == weight.dtype == torch.float32
        and hidden.ndim == 2
        and not torch.is_autocast_enabled("cpu")
    )


def catalogue_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T + bias, targets)`` (mean over rows): ``hidden [P, d]``,
    ``weight [N, d]`` (the catalogue's output vectors), ``bias [N]`` or ``None``, ``targets [P]``
    item ids in ``[0, N)``. The same value and gradients to float rounding, without the ``[P, N]``
    logits on a CPU (module docstring)."""
    if hidden.shape[0] == 0 or not blocked(hidden, weight):
        logits = hidden @ weight.t()
        return F.cross_entropy(logits if bias is None else logits + bias, targets)
    targets = targets.long()
    low, high = (int(v) for v in torch.aminmax(targets))
    if low < 0 or high >= weight.shape[0]:
        raise IndexError(f"catalogue_cross_entropy: targets must lie in [0, {weight.shape[0]}), got [{low}, {high}]")
    return _LinearCrossEntropy.apply(hidden.contiguous(), weight, bias, targets.contiguous())
