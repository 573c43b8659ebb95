"""Training epoch time of sequential models with length-bucketed batches vs uniform random batches.

    python benchmarks/length_buckets.py --dataset ml-1m --models bert4rec,sasrec --buckets 8 \\
        --epochs 1 --json results/length_buckets.json

For each model (its preset, :mod:`raysteal.training.presets`), the same seeded model is trained
for ``--epochs`` epochs twice in this process, once with uniform random batches
(``length_buckets = 0``) and once with ``length_buckets = --buckets``, and the seconds per epoch,
the padded tokens per epoch (batch rows x batch width, what the encoder computes on) and the mean
training loss are printed. The figure of merit is the ratio ``seconds(0) / seconds(buckets)``
in the same run (these machines are noisy; only the peer comparison is meaningful).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch
from _common import device_name, sequence_benchmark_parser, sync, training_log, write_json


def padded_tokens(sampler: Any, generator: torch.Generator) -> int:
    """Sum over one epoch's batches of rows x width (after leading padding is trimmed)."""
    return sum(int(b["inputs"].numel()) for b in sampler.epoch(generator))


def time_epochs(name: str, log: Any, buckets: int, args: argparse.Namespace) -> dict[str, Any]:
    from raysteal.models import make_config
    from raysteal.training import preset, resolve_device, seeded_model
    from raysteal.training.loop import optimize

    model_cfg, train_cfg = preset(name)
    cfg = make_config({**model_cfg, "length_buckets": buckets})
    dev = resolve_device(args.device)
    model = seeded_model(cfg, log.num_users, log.num_items, args.seed).to(dev)
    sampler = model.make_sampler(log, train_cfg.get("batch_size", 128))
    tokens = padded_tokens(sampler, torch.Generator().manual_seed(args.seed))
    sync(dev)
    started = time.perf_counter()
    result = optimize(
        model, sampler, model.loss, args.epochs, train_cfg.get("lr", 1e-3), torch.Generator().manual_seed(args.seed), device=dev
    )
    sync(dev)
    seconds = (time.perf_counter() - started) / args.epochs
    return {
        "model": cfg.model,
        "length_buckets": buckets,
        "seconds_per_epoch": seconds,
        "padded_tokens_per_epoch": tokens,
        "windows": len(sampler.windows),
        "batches": len(sampler),
        "mean_loss": result.losses[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = sequence_benchmark_parser(__doc__.splitlines()[0], "bert4rec,sasrec")
    parser.add_argument("--buckets", type=int, default=8, help="pool size in batches for the bucketed run")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if args.buckets < 1 or args.epochs < 1:
        parser.error("--buckets and --epochs must be >= 1")

    from raysteal.training import resolve_device

    train, names = training_log(args)
    rows = []
    for name in names:
        plain = time_epochs(name, train, 0, args)
        bucketed = time_epochs(name, train, args.buckets, args)
        speedup = plain["seconds_per_epoch"] / bucketed["seconds_per_epoch"]
        token_ratio = bucketed["padded_tokens_per_epoch"] / plain["padded_tokens_per_epoch"]
        print(
            f"{name:>9}  uniform {plain['seconds_per_epoch']:.1f}s/epoch  buckets={args.buckets} "
            f"{bucketed['seconds_per_epoch']:.1f}s/epoch  speedup {speedup:.2f}x  padded tokens x{token_ratio:.2f}  "
            f"loss {plain['mean_loss']:.4f} / {bucketed['mean_loss']:.4f}",
            flush=True,
        )
        rows.append(
            {
                "model": name,
                "dataset": args.dataset,
                "device": device_name(resolve_device(args.device)),
                "uniform": plain,
                "bucketed": bucketed,
                "speedup": speedup,
                "padded_token_ratio": token_ratio,
            }
        )
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
