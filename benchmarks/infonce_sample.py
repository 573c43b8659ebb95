"""A BAHSD student step with InfoNCE over every prefix of the batch against InfoNCE over a random
sample of them (``infonce_prefixes``), in one process, rounds alternating, by this thread's CPU time.

    python benchmarks/infonce_sample.py [--rounds 5] [--sample 256] [--json results/infonce_sample.json]

The setting of ``benchmarks/bahsd_step.py`` (the real-history search's shapes: 32 histories of
long-tailed lengths up to 100 items, about 1,900 queried prefixes a batch, SASRec d = 50, ML-1M's
3,706 items, the search's best configuration with InfoNCE on). InfoNCE's second view is a suffix
of each prefix, encoded on its own: one encoder pass over ~1,900 short sequences beside the batch's
32 long ones, most of a step. With ``infonce_prefixes: m`` only m views are encoded (and the term
scaled by the batch's share, :meth:`~raysteal.extraction.bahsd.BAHSDObjective.contrastive_term`).
This is a cheaper estimate of the same term, not the same computation: the report gives each
step's time and the ratio, not a check of equal values.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import device_name, write_json  # noqa: E402


def step_seconds(student: Any, objective: Any, batch: Any, start: dict[str, torch.Tensor]) -> float:
    """CPU seconds of one training step (objective, backward, clip, AdamW) from the weights ``start``."""
    from raysteal.training.step import adamw, training_step

    student.load_state_dict(start)
    params = [p for p in student.parameters() if p.requires_grad]
    step = functools.partial(training_step, adamw(params, lr=0.01), params, device=torch.device("cpu"), amp=False, grad_clip=5.0)
    began = time.thread_time()
    step(functools.partial(objective, student, batch))
    return time.thread_time() - began


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import bahsd_step

    from raysteal.extraction.bahsd import BAHSDConfig, BAHSDObjective

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sample", type=int, default=256, help="infonce_prefixes: views encoded per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="a tiny setting (tests)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.sample < 2 or args.rounds < 1 or args.threads < 1:
        parser.error("--sample must be at least 2, --rounds and --threads at least 1")
    shapes = argparse.Namespace(
        sequences=32,
        length=100,
        items=bahsd_step.ML1M_ITEMS,
        dim=50,
        k=100,
        queried=74,
        negatives=100,
        rounds=args.rounds,
        smoke=args.smoke,
    )
    if args.smoke:
        shapes.sequences, shapes.length, shapes.items, shapes.dim, shapes.k, shapes.negatives, shapes.queried = 4, 40, 60, 8, 5, 5, 30
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        student, _, batch = bahsd_step.make_setting(shapes)
        base = {**bahsd_step.BEST, "max_len": shapes.length, "k": shapes.k, "infonce": True}
        objectives = {
            "every_prefix": BAHSDObjective.from_config(BAHSDConfig(**base)),
            "sampled": BAHSDObjective.from_config(BAHSDConfig(**{**base, "infonce_prefixes": args.sample})),
        }
        without = BAHSDObjective.from_config(BAHSDConfig(**{**base, "infonce": False}))
        start = {name: value.clone() for name, value in student.state_dict().items()}
        times: dict[str, list[float]] = {"every_prefix": [], "sampled": [], "no_infonce": []}
        for _name, objective in (*objectives.items(), ("no_infonce", without)):  # warm-up
            step_seconds(student, objective, batch, start)
        for _ in range(args.rounds):
            for name, objective in (*objectives.items(), ("no_infonce", without)):
                times[name].append(step_seconds(student, objective, batch, start))
    finally:
        torch.set_num_threads(threads)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = [a / b for a, b in zip(times["every_prefix"], times["sampled"])]
    report = {
        "benchmark": "infonce_sample",
        "device": device_name("cpu"),
        "threads": args.threads,
        "torch": torch.__version__,
        "setting": {"prefixes": int(batch.rows.numel()), "sample": args.sample, "sequences": shapes.sequences, "length": shapes.length},
        "step_seconds_cpu": medians,
        "rounds_cpu": times,
        "speedup_median_of_pairs": statistics.median(ratios),
    }
    print(
        f"BAHSD step, {report['setting']['prefixes']} prefixes, {args.threads} thread(s), CPU s: InfoNCE over every prefix "
        f"{medians['every_prefix']:.3f}, over {args.sample} sampled {medians['sampled']:.3f} ({report['speedup_median_of_pairs']:.2f}x, "
        f"median of {args.rounds} pairs), without InfoNCE {medians['no_infonce']:.3f}"
    )
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
