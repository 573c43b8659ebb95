"""How raysteal scales with workers and with concurrent attackers.

    python benchmarks/scaling.py [--quick] [--workers 1,2,4] [--attackers 8,64,256] [--json PATH]

1. **Runs per minute** of a fixed attack grid (PTQ against a BPR-MF target on the synthetic
   long-tail dataset, one run per seed) through the same runner as ``raysteal run``, with a local
   Ray runtime of 1, 2, 4, ... CPUs (default: powers of two up to the cores present). Efficiency =
   (runs/min with w workers) / (w x runs/min with one worker).
2. **Concurrent attackers**: ``raysteal simulate``'s engine with 8, 64 and 256 attackers (QSD,
   light epochs, 4 attackers per core) against one shared TargetServer on all cores: wall time,
   attackers/min, the marginal rate between consecutive counts (which removes the fixed cost of
   starting the worker processes), queries/s served and server latency p50/p99.

The target is trained once into a cache before anything is timed; each configuration gets a fresh
Ray runtime whose start-up is not timed (worker processes start inside the timing, as in real use).
``--quick`` halves the grid and caps attackers at 64.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import device_name, write_json  # noqa: E402

DATASET = {"name": "synthetic", "options": {"num_users": 2000, "num_items": 1000, "item_exponent": 0.6, "seed": 0}}
TARGET = {"model": "bpr", "train": {"epochs": 30, "batch_size": 1024}}


def grid_config(seeds: int):
    from raysteal.experiment.config import parse_experiment

    return parse_experiment(
        {
            "experiment": "scaling-grid",
            "seeds": seeds,
            "datasets": [DATASET],
            "targets": [TARGET],
            "attacks": [{"attack": "ptq", "epochs": 30, "finetune_epochs": 30}],
            "split": {"attacker_fraction": 0.2},
            "k": 20,
        },
        source="scaling grid",
    )


def simulation_config(attackers: int):
    from raysteal.experiment.simulate_config import parse_simulation

    return parse_simulation(
        {
            "experiment": f"scaling-sim-{attackers}",
            "datasets": [DATASET],
            "targets": [TARGET],
            "attacks": [{"attack": "qsd", "finetune_epochs": 3}],
            "split": {"attacker_fraction": 0.02},
            "k": 20,
            "budget": 25,
            "simulation": {"attackers": attackers, "cpus_per_attacker": 0.25, "request_size": 8},
        },
        source="scaling simulation",
    )


def start_ray(num_cpus: int, cpu_only: bool) -> None:
    from raysteal.distributed.runtime import init_ray

    init_ray(num_cpus=num_cpus, object_store_mb=512, num_gpus=0 if cpu_only else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = os.cpu_count() or 1
    default_workers = [w for w in (1, 2, 4, 8, 16, 32, 64) if w <= cores]
    parser.add_argument("--workers", default=",".join(map(str, default_workers)), help="worker counts (CPUs of the local Ray runtime)")
    parser.add_argument("--attackers", default="8,64,256", help="concurrent attacker counts")
    parser.add_argument("--seeds", type=int, default=None, help="runs in the grid (default 16, quick 8)")
    parser.add_argument("--quick", action="store_true", help="a smaller grid; at most 64 attackers")
    parser.add_argument("--cpu-only", action="store_true", help="hide GPUs from Ray (pure CPU scaling)")
    parser.add_argument("--cache-dir", help="target cache (default: a fresh temporary one)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import ray
    import torch

    from raysteal.distributed.experiment_runner import run_experiment
    from raysteal.distributed.simulate import run_simulation

    workers = [int(w) for w in args.workers.split(",") if w]
    attackers = [int(a) for a in args.attackers.split(",") if a]
    if args.quick:
        attackers = [a for a in attackers if a <= 64]
    seeds = args.seeds or (8 if args.quick else 16)
    root = Path(tempfile.mkdtemp(prefix="scaling-"))
    cache = args.cache_dir or str(root / "cache")
    device = device_name("cuda" if torch.cuda.is_available() and not args.cpu_only else "cpu")
    report: dict = {"device": device, "cores": cores, "grid_runs": seeds, "workers": [], "attackers": []}

    # the target (and its truth lists) once, outside every timing
    start_ray(max(workers), args.cpu_only)
    run_experiment(grid_config(1), root / "warmup", cache_dir=cache, progress=False)
    ray.shutdown()

    base = None
    for w in workers:
        start_ray(w, args.cpu_only)
        started = time.perf_counter()
        store = run_experiment(grid_config(seeds), root / f"grid-{w}", cache_dir=cache, progress=False)
        wall = time.perf_counter() - started
        ray.shutdown()
        runs = len(store.load())
        rate = 60.0 * runs / wall
        base = base or rate / w
        entry = {"workers": w, "runs": runs, "wall_s": wall, "runs_per_min": rate, "efficiency": rate / (w * base)}
        report["workers"].append(entry)
        print(
            f"grid  {w:3d} workers: {runs} runs in {wall:6.1f} s = {rate:6.2f} runs/min, efficiency {entry['efficiency']:.2f}", flush=True
        )
        write_json(args.json, report)

    previous = None
    for n in attackers:
        start_ray(cores, args.cpu_only)
        summary = run_simulation(simulation_config(n), root / f"sim-{n}", cache_dir=cache, progress=False)
        ray.shutdown()
        per_min = summary["attackers_per_min"]
        marginal = 60.0 * (n - previous[0]) / (summary["wall_s"] - previous[1]) if previous and summary["wall_s"] > previous[1] else None
        previous = (n, summary["wall_s"])
        entry = {
            "attackers": n,
            "wall_s": summary["wall_s"],
            "attackers_per_min": per_min,
            "queries": summary["queries"],
            "qps": summary["qps"],
            "latency_ms": summary["latency_ms"],
            "client_latency_ms": summary["client_latency_ms"],
            "budget_overspend": summary["budget_overspend"],
            "marginal_attackers_per_min": marginal,
        }
        report["attackers"].append(entry)
        print(
            f"sim  {n:4d} attackers: {summary['wall_s']:6.1f} s, {per_min:7.1f} attackers/min"
            + (f" (marginal {marginal:7.1f}/min)" if marginal else "")
            + f", {summary['qps']:7.1f} queries/s, latency p50 {summary['latency_ms']['p50']:.1f} / p99 {summary['latency_ms']['p99']:.1f} ms,"
            f" overspend {summary['budget_overspend']}",
            flush=True,
        )
        write_json(args.json, report)
    print(f"\n{device}; results under {root}")


if __name__ == "__main__":
    main()
