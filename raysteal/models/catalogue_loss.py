"""Full-catalogue softmax cross-entropy of a linear output layer, in cache-sized row blocks.

Every sequential target (SASRec, BERT4Rec, GRU4Rec, NARM, STAMP) trains on the softmax
cross-entropy of the next (or masked) item over the whole catalogue, with logits
``hidden @ weight.T (+ bias)``. Written as ``F.cross_entropy(logits, targets)``, a batch of
SASRec's ML-1M preset (about 25,000 positions x 3,706 items) streams a 380 MB logit matrix, its
log-softmax and their gradients through memory several times; on a CPU the log-softmax and its
backward alone were a quarter of the step. :func:`catalogue_cross_entropy` computes the same mean
loss and gradients block by block: each block of rows forms its logits in cache, keeps only each
row's log-partition for the backward pass, and the backward pass recomputes the block's logits and
turns them into ``softmax - onehot`` in place (one matrix product more than the plain path, no
``[P, N]`` tensor held). ``benchmarks/catalogue_ce.py`` measures it against the plain path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK_ELEMENTS = 1 << 18
"""Logits formed at a time (1 MB of float32): rows per block = this / catalogue size, at least 16."""


def block_rows(num_items: int) -> int:
    """Rows of one block for a catalogue of ``num_items``."""
    return max(16, BLOCK_ELEMENTS // max(int(num_items), 1))


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T + bias`` against ``targets``, by row blocks."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rows = hidden.shape[0]
        step = block_rows(weight.shape[0])
        log_partition = hidden.new_empty(rows)
        total = hidden.new_zeros(())
        for lo in range(0, rows, step):
            hi = min(lo + step, rows)
            logits = hidden[lo:hi] @ weight.t()
            if bias is not None:
                logits += bias
            lse = torch.logsumexp(logits, dim=1)
            log_partition[lo:hi] = lse
            total += (lse - logits.gather(1, targets[lo:hi, None])[:, 0]).sum()
        ctx.save_for_backward(hidden, weight, bias, targets, log_partition)
        return total / rows

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor):  # noqa: D102
        hidden, weight, bias, targets, log_partition = ctx.saved_tensors
        rows = hidden.shape[0]
        scale = grad_outputs[0] / rows
        step = block_rows(weight.shape[0])
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        grad_bias = torch.zeros_like(bias) if need_bias and bias is not None else None
        for lo in range(0, rows, step):
            hi = min(lo + step, rows)
            block = hidden[lo:hi] @ weight.t()
            if bias is not None:
                block += bias
            block.sub_(log_partition[lo:hi, None]).exp_()  # the softmax
            block[torch.arange(hi - lo, device=block.device), targets[lo:hi]] -= 1.0
            block.mul_(scale)
            if grad_hidden is not None:
                torch.mm(block, weight, out=grad_hidden[lo:hi])
            if grad_weight is not None:
                grad_weight.addmm_(block.t(), hidden[lo:hi])
            if grad_bias is not None:
                grad_bias += block.sum(0)
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
