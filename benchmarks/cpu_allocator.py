"""CPU training steps with glibc's default malloc vs :func:`retain_freed_memory`, in one process.

    python benchmarks/cpu_allocator.py --dataset ml-1m --models narm,bert4rec --steps 10 --rounds 3 \\
        --json results/cpu_allocator.json

For each model (its preset), the same ``--steps`` training batches are replayed ``--rounds``
times with the default allocator and with freed memory retained, alternating (default, tuned,
default, tuned, ...) so that load on a shared machine hits both alike. Printed per phase: wall
seconds, minor page faults, kernel and user CPU seconds; the figure of merit is the ratio of the
medians, ``default / tuned`` (peer comparison in the same run).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from typing import Any

import torch
from _common import device_name, sequence_benchmark_parser, training_log, write_json


def replay(model: Any, batches: list[dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Train on ``batches`` once; wall seconds, minor faults, system and user seconds."""
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for batch in batches:
        loss = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "system_seconds": after.ru_stime - before.ru_stime,
        "user_seconds": after.ru_utime - before.ru_utime,
    }


def bench(name: str, log: Any, args: argparse.Namespace) -> dict[str, Any]:
    from raysteal.models import make_config
    from raysteal.training import preset, seeded_model
    from raysteal.training.cpu_memory import restore_malloc_defaults, retain_freed_memory

    model_cfg, train_cfg = preset(name)
    model = seeded_model(make_config(model_cfg), log.num_users, log.num_items, args.seed)
    sampler = model.make_sampler(log, train_cfg.get("batch_size", 128))
    draws = sampler.epoch(torch.Generator().manual_seed(args.seed))
    batches = [next(draws) for _ in range(min(args.steps, len(sampler)))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    phases: dict[str, list[dict[str, float]]] = {"default": [], "retained": []}
    for round_ in range(args.rounds):
        for phase in ("default", "retained"):
            if phase == "default":
                restore_malloc_defaults()
            elif not retain_freed_memory():
                raise SystemExit("retain_freed_memory() is not available here (needs glibc on Linux)")
            stats = replay(model, batches, optimizer)
            phases[phase].append(stats)
            print(
                f"{name:>9}  round {round_}  {phase:>8}  {stats['seconds']:.2f}s  faults {stats['minor_faults']:,}  "
                f"sys {stats['system_seconds']:.2f}s  user {stats['user_seconds']:.2f}s",
                flush=True,
            )
    restore_malloc_defaults()
    median = {p: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for p, runs in phases.items()}
    speedup = median["default"]["seconds"] / median["retained"]["seconds"]
    print(
        f"{name:>9}  median {median['default']['seconds']:.2f}s -> {median['retained']['seconds']:.2f}s  "
        f"speedup {speedup:.2f}x  faults {median['default']['minor_faults']:,.0f} -> {median['retained']['minor_faults']:,.0f}",
        flush=True,
    )
    return {"model": name, "steps": len(batches), "rounds": args.rounds, "phases": phases, "median": median, "speedup": speedup}


def main(argv: list[str] | None = None) -> int:
    parser = sequence_benchmark_parser(__doc__.splitlines()[0], "narm,bert4rec")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1")
    train, names = training_log(args)
    rows = [bench(name, train, args) for name in names]
    write_json(
        args.json,
        {
            "benchmark": "cpu_allocator",
            "dataset": args.dataset,
            "device": device_name("cpu"),
            "threads": torch.get_num_threads(),
            "models": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
