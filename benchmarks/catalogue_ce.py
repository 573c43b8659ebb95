"""One training step of a sequential target with full-catalogue cross-entropy on a CPU thread: the
plain path (``F.cross_entropy`` of the ``[positions, items]`` logits), the previous blocked path
(row blocks of ``2**18 / items`` positions, at least 16, over the whole catalogue: kept here as
:class:`PreviousLinearCrossEntropy`) and the library's tiled one
(:func:`raysteal.models.catalogue_loss.catalogue_cross_entropy`), in one process, rounds
alternating, by this thread's CPU time.

    python benchmarks/catalogue_ce.py [--models sasrec,gru4rec] [--items 3706] [--rounds 5] [--json PATH]
    python benchmarks/catalogue_ce.py --items 54542 --length 7    # Amazon Beauty's catalogue and windows

The setting of the SASRec target preset on ML-1M (batch 128, windows of 200 items, every position a
target: about 25,600 positions a batch, d = 50); ``--items 54542 --length 7`` is about a batch of
Amazon Beauty (BERT4Rec's file): 896 target positions over 54,542 items, where its training windows
(6.8 items a user on average) give about 740 a batch. The batch is random item ids of full windows; each round starts
every path from the same weights. Before timing, the run checks that all give the same loss and
gradients (to float rounding).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import alternating_rounds, device_name, require_positive, same_loss_and_gradients, write_json  # noqa: E402

MODELS = ("sasrec", "gru4rec", "narm", "stamp")
"""Next-item models (BERT4Rec takes the same loss on its masked positions only, a fifth of them)."""


class PreviousLinearCrossEntropy(torch.autograd.Function):
    """The previous code: mean cross-entropy of ``hidden @ weight.T + bias`` by row blocks of
    ``max(16, 2**18 // items)`` positions, each block's logits over the whole catalogue."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:  # noqa: D102
        rows, step = hidden.shape[0], max(16, (1 << 18) // max(int(weight.shape[0]), 1))
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
        rows, step = hidden.shape[0], max(16, (1 << 18) // max(int(weight.shape[0]), 1))
        scale = grad_outputs[0] / rows
        grad_hidden, grad_weight = torch.empty_like(hidden), torch.zeros_like(weight)
        grad_bias = torch.zeros_like(bias) if bias is not None else None
        for lo in range(0, rows, step):
            hi = min(lo + step, rows)
            block = hidden[lo:hi] @ weight.t()
            if bias is not None:
                block += bias
            block.sub_(log_partition[lo:hi, None]).exp_()
            block[torch.arange(hi - lo), targets[lo:hi]] -= 1.0
            block.mul_(scale)
            torch.mm(block, weight, out=grad_hidden[lo:hi])
            grad_weight.addmm_(block.t(), hidden[lo:hi])
            if grad_bias is not None:
                grad_bias += block.sum(0)
        return grad_hidden, grad_weight, grad_bias, None


def previous_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    """The previous :func:`~raysteal.models.catalogue_loss.catalogue_cross_entropy` (its CPU float32 path)."""
    return PreviousLinearCrossEntropy.apply(hidden.contiguous(), weight, bias, targets.long().contiguous())


def make_batch(items: int, sequences: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Full windows of random items, every position's next item its target."""
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(0, items, (sequences, length + 1), generator=g)
    return {"inputs": seqs[:, :-1].contiguous(), "targets": seqs[:, 1:].contiguous()}


def step(model: Any, batch: dict[str, torch.Tensor], path: str) -> tuple[float, float, list[torch.Tensor]]:
    """``(CPU seconds, loss, gradients)`` of one forward and backward pass of the model's loss by
    ``path``: ``plain``, ``previous`` or ``tiled`` (the library's)."""
    from raysteal.models import sequence_layers

    model.zero_grad(set_to_none=True)
    original_layer, original_loss = model.output_layer, sequence_layers.catalogue_cross_entropy
    if path == "plain":
        model.output_layer = lambda: None  # F.cross_entropy of the full logits
    elif path == "previous":
        sequence_layers.catalogue_cross_entropy = previous_cross_entropy
    try:
        began = time.thread_time()
        loss = model.loss(batch)
        loss.backward()
        seconds = time.thread_time() - began
    finally:
        model.output_layer, sequence_layers.catalogue_cross_entropy = original_layer, original_loss
    return seconds, float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from raysteal.training.presets import preset
    from raysteal.training.trainer import seeded_model

    model_cfg, _ = preset(name)
    model_cfg = {**model_cfg, "max_len": args.length}
    if name == "narm":
        model_cfg["positions_per_sequence"] = None  # every position a target, as the other models
    model = seeded_model(model_cfg, 0, args.items, seed=0)
    model.eval()  # no dropout: both paths see the same activations
    batch = make_batch(args.items, args.sequences, args.length)
    _, *plain = step(model, batch, "plain")
    _, *previous = step(model, batch, "previous")
    _, *tiled = step(model, batch, "tiled")
    checks = {
        "against_plain": same_loss_and_gradients(name, tuple(plain), tuple(tiled), ("plain", "tiled")),  # type: ignore[arg-type]
        "against_previous": same_loss_and_gradients(name, tuple(previous), tuple(tiled), ("previous", "tiled")),  # type: ignore[arg-type]
    }
    against_plain = alternating_rounds(
        args.rounds, lambda: step(model, batch, "plain")[0], lambda: step(model, batch, "tiled")[0], ("plain", "tiled")
    )
    against_previous = alternating_rounds(
        args.rounds, lambda: step(model, batch, "previous")[0], lambda: step(model, batch, "tiled")[0], ("previous", "tiled")
    )
    timing = {
        "plain_seconds_cpu": against_plain["plain_seconds_cpu"],
        "previous_seconds_cpu": against_previous["previous_seconds_cpu"],
        "tiled_seconds_cpu": statistics.median(against_plain["rounds_cpu"]["tiled"] + against_previous["rounds_cpu"]["tiled"]),
        "speedup_over_plain": against_plain["speedup_median_of_pairs"],
        "speedup_over_previous": against_previous["speedup_median_of_pairs"],
        "rounds_cpu": {**against_plain["rounds_cpu"], "previous": against_previous["rounds_cpu"]["previous"]},
    }
    return {"model": name, "checks": checks, **timing}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="sasrec,gru4rec")
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--sequences", type=int, default=128)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    require_positive(parser, args, "items", "sequences", "length", "rounds", "threads")
    models = [m for m in args.models.split(",") if m]
    if not models or any(m not in MODELS for m in models):
        parser.error(f"--models takes some of {', '.join(MODELS)}, got {args.models!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        results = [bench_model(m, args) for m in models]
    finally:
        torch.set_num_threads(threads)
    report = {
        "benchmark": "catalogue_ce",
        "device": device_name("cpu"),
        "threads": args.threads,
        "torch": torch.__version__,
        "setting": {"items": args.items, "sequences": args.sequences, "length": args.length, "rounds": args.rounds},
        "models": results,
    }
    for r in results:
        print(
            f"{r['model']}: forward + backward, {args.sequences} x {args.length} positions, {args.items} items, {args.threads} thread(s): "
            f"plain {r['plain_seconds_cpu']:.3f} s, previous {r['previous_seconds_cpu']:.3f} s, tiled {r['tiled_seconds_cpu']:.3f} s CPU; "
            f"tiled {r['speedup_over_plain']:.2f}x the plain path, {r['speedup_over_previous']:.2f}x the previous one (medians of {args.rounds} pairs)"
        )
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
