"""One training step of a sequential target with full-catalogue cross-entropy on a CPU thread: the
plain path (``F.cross_entropy`` of the ``[positions, items]`` logits) against the library's blocked
one (:func:`raysteal.models.catalogue_loss.catalogue_cross_entropy`), in one process, rounds
alternating, by this thread's CPU time.

    python benchmarks/catalogue_ce.py [--models sasrec,gru4rec] [--items 3706] [--rounds 5] [--json PATH]

The setting of the SASRec target preset on ML-1M (batch 128, windows of 200 items, every position a
target: about 25,600 positions a batch, d = 50; ``--items 12101`` is Beauty's catalogue). The batch
is random item ids of full windows; each round starts both paths from the same weights. Before
timing, the run checks that both give the same loss and gradients (to float rounding).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import alternating_rounds, device_name, require_positive, same_loss_and_gradients, write_json  # noqa: E402

MODELS = ("sasrec", "gru4rec", "narm", "stamp")
"""Next-item models (BERT4Rec takes the same loss on its masked positions only, a fifth of them)."""


def make_batch(items: int, sequences: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Full windows of random items, every position's next item its target."""
    g = torch.Generator().manual_seed(seed)
    seqs = torch.randint(0, items, (sequences, length + 1), generator=g)
    return {"inputs": seqs[:, :-1].contiguous(), "targets": seqs[:, 1:].contiguous()}


def step(model: Any, batch: dict[str, torch.Tensor], plain: bool) -> tuple[float, float, list[torch.Tensor]]:
    """``(CPU seconds, loss, gradients)`` of one forward and backward pass of the model's loss."""
    model.zero_grad(set_to_none=True)
    original = model.output_layer
    if plain:
        model.output_layer = lambda: None  # the plain path: F.cross_entropy of the full logits
    try:
        began = time.thread_time()
        loss = model.loss(batch)
        loss.backward()
        seconds = time.thread_time() - began
    finally:
        model.output_layer = original
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
    _, loss_plain, grads_plain = step(model, batch, plain=True)
    _, loss_blocked, grads_blocked = step(model, batch, plain=False)
    checks = same_loss_and_gradients(name, (loss_plain, grads_plain), (loss_blocked, grads_blocked), ("plain", "blocked"))
    timing = alternating_rounds(
        args.rounds, lambda: step(model, batch, plain=True)[0], lambda: step(model, batch, plain=False)[0], ("plain", "blocked")
    )
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
            f"plain {r['plain_seconds_cpu']:.3f} s, blocked {r['blocked_seconds_cpu']:.3f} s CPU, "
            f"{r['speedup_median_of_pairs']:.2f}x (median of {args.rounds} pairs)"
        )
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
