"""NARM / STAMP prefix attention over every column vs over the columns each prefix can see.

    python benchmarks/prefix_attention.py --models narm,stamp --sequences 64 --length 200 \\
        --rounds 3 --json results/prefix_attention.json

A student trained on every prefix of full-length synthetic sequences (DFME, Yue et al. 2021)
asks NARM's / STAMP's additive attention for ``sequences x length`` prefixes at once. For each
model (its preset architecture, ML-1M's 3,416 items) one training step's forward and backward
of ``represent`` over all prefixes of a random batch is timed with
:func:`~raysteal.models.sequence_layers.prefix_additive_attention` at ``chunks=1`` (every prefix
against the whole width: the formula as written) and at ``--chunks`` (each group of prefixes
only over the columns it can see), alternating rounds so load on a shared machine hits both
alike. The figure of merit is the ratio of the median step times, ``full / chunked``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import device_name, sync, write_json  # noqa: E402

ML1M_ITEMS = 3416


def step_seconds(model: Any, indices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, device: str) -> float:
    """Seconds for one forward + backward of ``represent`` over the given prefixes."""
    sync(device)
    t0 = time.perf_counter()
    model.zero_grad(set_to_none=True)
    model.represent(indices, rows, cols).square().mean().backward()
    sync(device)
    return time.perf_counter() - t0


def bench(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from raysteal.models.sequence_layers import prefix_additive_attention
    from raysteal.training import preset, seeded_model

    module = importlib.import_module(f"raysteal.models.{name}")
    model_cfg, _ = preset(name)
    model = seeded_model({**model_cfg, "max_len": args.length}, 0, ML1M_ITEMS, seed=0).to(args.device).train()
    gen = torch.Generator().manual_seed(0)
    indices = (torch.randint(0, ML1M_ITEMS, (args.sequences, args.length), generator=gen) + 1).to(args.device)  # shifted ids
    rows = torch.arange(args.sequences, device=args.device).repeat_interleave(args.length)
    cols = torch.arange(args.length, device=args.device).repeat(args.sequences)
    times: dict[int, list[float]] = {1: [], args.chunks: []}
    try:
        for _ in range(args.rounds):
            for chunks in times:
                module.prefix_additive_attention = functools.partial(prefix_additive_attention, chunks=chunks)
                step_seconds(model, indices, rows, cols, args.device)  # warm-up at this setting
                times[chunks].append(step_seconds(model, indices, rows, cols, args.device))
    finally:
        module.prefix_additive_attention = prefix_additive_attention
    full, chunked = statistics.median(times[1]), statistics.median(times[args.chunks])
    row = {
        "model": name,
        "prefixes": int(rows.numel()),
        "length": args.length,
        "chunks": args.chunks,
        "full_seconds": times[1],
        "chunked_seconds": times[args.chunks],
        "speedup": full / chunked,
    }
    print(
        f"{name}: {rows.numel()} prefixes of up to {args.length} items; step full {full:.3f}s, "
        f"chunked ({args.chunks}) {chunked:.3f}s, speedup {full / chunked:.2f}x",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="narm,stamp")
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.chunks < 2 or args.sequences < 1 or args.length < 1:
        parser.error("--rounds, --sequences and --length must be >= 1 and --chunks >= 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device_name(args.device)}", flush=True)
    rows = [bench(name.strip(), args) for name in args.models.split(",") if name.strip()]
    write_json(args.json, {"benchmark": "prefix_attention", "device": device_name(args.device), "results": rows})
    return rows


if __name__ == "__main__":
    main()
