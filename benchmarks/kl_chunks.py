"""The catalogue-wide KL of BAHSD's high-confidence branch (and of the KL-for-all baseline): the
dense definition (``kl_rank_distillation_reference``: log-softmax, masks and gather over the whole
``[P, N]`` batch) against the library's row-chunked path (``kl_rank_distillation``), forward and
backward, in one process, rounds alternating dense / chunked, timed by this thread's CPU time.

    python benchmarks/kl_chunks.py [--rounds 7] [--prefixes 1900] [--json results/kl_chunks.json]

Shapes of the real-history search (experiments/bahsd/search-long-real-ml1m.yaml): about 1,900
queried prefixes a batch (32 histories of up to 100 items, the 60,000-query budget spread over
their prefixes), ML-1M's 3,706 items, top-100 lists, each prefix's own items excluded from the
softmax. Before timing, the two paths are checked to give the same values and gradients.
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
from _common import device_name, require_positive, write_json  # noqa: E402


def make_batch(prefixes: int, items: int, k: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random scores, top-``k`` lists, per-prefix temperatures and exclusion masks of the given shapes."""
    from raysteal.extraction.bahsd import prefix_item_mask

    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, items, (32, length), generator=g)
    rows = torch.randint(0, 32, (prefixes,), generator=g)
    cols = torch.randint(0, length, (prefixes,), generator=g)
    return {
        "scores": torch.randn(prefixes, items, generator=g),
        "lists": torch.rand(prefixes, items, generator=g).argsort(1)[:, :k],
        "temperature": 1.0 + 4.5 * torch.rand(prefixes, generator=g),
        "exclude": prefix_item_mask(inputs, rows, cols, items),
        "weights": torch.rand(prefixes, generator=g),
    }


def one_pass(fn: Any, batch: dict[str, torch.Tensor]) -> tuple[float, torch.Tensor, torch.Tensor]:
    """``(CPU seconds, KL, gradient of the scores)`` of one forward and backward pass."""
    scores = batch["scores"].clone().requires_grad_()
    start = time.thread_time()
    kl = fn(scores, batch["lists"], batch["temperature"], exclude=batch["exclude"])
    (batch["weights"] * kl).sum().backward()
    seconds = time.thread_time() - start
    assert scores.grad is not None
    return seconds, kl.detach(), scores.grad


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from raysteal.extraction.bahsd_losses import kl_rank_distillation, kl_rank_distillation_reference

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefixes", type=int, default=1900)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    require_positive(parser, args, "prefixes", "items", "k", "length", "rounds", "threads")
    if args.k > args.items:
        parser.error(f"--k ({args.k}) cannot exceed --items ({args.items})")
    torch.set_num_threads(args.threads)
    batch = make_batch(args.prefixes, args.items, args.k, args.length)
    _, kl_dense, grad_dense = one_pass(kl_rank_distillation_reference, batch)
    _, kl_chunked, grad_chunked = one_pass(kl_rank_distillation, batch)
    checks = {
        "max_kl_abs_diff": float((kl_dense - kl_chunked).abs().max()),
        "max_grad_abs_diff": float((grad_dense - grad_chunked).abs().max()),
        "max_grad_abs": float(grad_dense.abs().max()),
    }
    if not torch.allclose(kl_dense, kl_chunked, rtol=1e-4, atol=1e-4) or not torch.allclose(grad_dense, grad_chunked, rtol=1e-4, atol=1e-6):
        raise SystemExit(f"the chunked KL differs from the dense one: {checks}")
    dense, chunked = [], []
    for _ in range(args.rounds):
        dense.append(one_pass(kl_rank_distillation_reference, batch)[0])
        chunked.append(one_pass(kl_rank_distillation, batch)[0])
    ratios = [d / c for d, c in zip(dense, chunked)]
    report = {
        "benchmark": "kl_chunks",
        "device": device_name("cpu"),
        "threads": args.threads,
        "torch": torch.__version__,
        "setting": {k: getattr(args, k) for k in ("prefixes", "items", "k", "length", "rounds")},
        "checks": checks,
        "dense_seconds_cpu": statistics.median(dense),
        "chunked_seconds_cpu": statistics.median(chunked),
        "speedup_median_of_pairs": statistics.median(ratios),
        "rounds_cpu": {"dense": dense, "chunked": chunked},
    }
    print(
        f"KL forward+backward, {args.prefixes} x {args.items}, {args.threads} thread(s): dense {report['dense_seconds_cpu']:.4f} s, "
        f"chunked {report['chunked_seconds_cpu']:.4f} s, {report['speedup_median_of_pairs']:.2f}x (median of {args.rounds} pairs)"
    )
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
