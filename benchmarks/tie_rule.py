"""What the deterministic tie rule costs the black box: the in-process oracle with
``metrics.ranked_top`` (lowest item id first among equal scores) against the same oracle with
plain ``torch.topk``, in one process, rounds alternating A B A B, the ratio taken pair by pair.

    python benchmarks/tie_rule.py [--rounds 9] [--request 1024] [--json PATH]

Target: an MF (BPR) model of ML-1M's shape with its seen items excluded (3,706 items, K = 50), as
``benchmarks/oracle_throughput.py``'s in-process case; requests of ``--request`` users.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import device_name, rate, write_json  # noqa: E402
from oracle_throughput import load_log, make_target, request_inputs  # noqa: E402


def plain_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tie order ``torch.topk`` leaves to its kernel (the code before the rule)."""
    return torch.topk(scores, k, dim=1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--request", type=int, default=1024)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> dict:
    """The paired rounds; the report (also written to ``--json``)."""

    import raysteal.oracle.engine as engine
    from raysteal.oracle import TargetSpec, in_process_oracle

    log = load_log()
    spec = TargetSpec.from_training_log(make_target("mf", log), log)
    client = in_process_oracle(spec).register_attacker("bench")
    inputs = request_inputs("mf", log, args.request, np.random.default_rng(1))
    ranked = engine.ranked_top

    def measure(topk_fn) -> float:
        engine.ranked_top = topk_fn
        try:
            return rate(lambda: len(client.query(inputs, args.k)), "cpu", warmup=1)
        finally:
            engine.ranked_top = ranked

    same = bool((client.query(inputs, args.k) == _with(engine, plain_topk, lambda: client.query(inputs, args.k))).all())
    pairs = []
    for _ in range(args.rounds):
        with_rule, without = measure(ranked), measure(plain_topk)
        pairs.append((with_rule, without))
    ratios = [a / b for a, b in pairs]
    report = {
        "device": device_name("cpu"),
        "request": args.request,
        "k": args.k,
        "queries_per_s_ranked_top": [a for a, _ in pairs],
        "queries_per_s_torch_topk": [b for _, b in pairs],
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "same_lists_on_these_inputs": same,
    }
    print(f"in-process oracle, MF target on {report['device']}, requests of {args.request} users, top-{args.k}")
    print(f"ranked_top : median {statistics.median(report['queries_per_s_ranked_top']):,.0f} queries/s")
    print(f"torch.topk : median {statistics.median(report['queries_per_s_torch_topk']):,.0f} queries/s")
    print(
        f"ratio (ranked_top / torch.topk), {args.rounds} pairs: median {report['ratio_median']:.3f} "
        f"(min {report['ratio_min']:.3f}, max {report['ratio_max']:.3f}); same lists: {same}"
    )
    if args.json:
        write_json(args.json, report)
    return report


def _with(module, topk_fn, call):
    """``call()`` with ``module.ranked_top`` replaced by ``topk_fn``."""
    saved = module.ranked_top
    module.ranked_top = topk_fn
    try:
        return call()
    finally:
        module.ranked_top = saved


if __name__ == "__main__":
    main()
