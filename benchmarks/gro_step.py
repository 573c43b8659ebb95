"""One GRO training step of a target on a CPU thread (Zhang et al., WSDM 2024): the previous code
against the library's, in one process, rounds alternating, by this thread's CPU time.

    python benchmarks/gro_step.py [--models sasrec,bpr] [--rounds 5] [--json results/gro_step.json]

A GRO step trains the target on its own loss plus the swap loss, and steps the simulated student
on the target's top-100 lists (:class:`raysteal.training.gro.GROObjective`). The student's loss
hinges every listed item against every sampled negative, and each negative is redrawn where it is
listed. The settings of the defense matrix on ML-1M: a SASRec target (window 50, batch 128, every
position; random full windows over ML-1M's 3,706 items) and a BPR target (d = 64, batch 2,048 on a
random log of ML-1M's target half's size).

* **old** — kept here: the hinge over the ``[N, k, m]`` broadcast (:func:`reference_hinge`) and
  the listed-again test over the ``[N, k, k]`` comparison (:func:`reference_in_rows`);
* **new** — :func:`~raysteal.training.gro.all_pairs_hinge_mean` (sorted rows, suffix sums) and
  :func:`~raysteal.training.gro.in_rows` (a binary search of each sorted list).

Both paths start each round from the same weights, student and generators; before timing, the run
checks that one step gives the same loss and the same target gradients (to float rounding).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import alternating_rounds, device_name, require_positive, same_loss_and_gradients, write_json  # noqa: E402

import raysteal.training.gro as gro  # noqa: E402

ML1M_ITEMS = 3706


def reference_hinge(pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    """The previous hinge: every (listed, negative) pair as one ``[N, k, m]`` tensor."""
    return F.relu(margin - (pos[:, :, None] - neg[:, None, :])).mean()


def reference_in_rows(rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The previous listed-again test: one ``[N, m, k]`` comparison."""
    return (values[:, :, None] == rows[:, None, :]).any(-1)


@contextmanager
def old_path(old: bool) -> Iterator[None]:
    """Within it, GRO uses the previous hinge and membership test when ``old``."""
    saved = gro.all_pairs_hinge_mean, gro.in_rows
    if old:
        gro.all_pairs_hinge_mean, gro.in_rows = reference_hinge, reference_in_rows
    try:
        yield
    finally:
        gro.all_pairs_hinge_mean, gro.in_rows = saved


def setting(name: str, args: argparse.Namespace) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    """A target, its GRO objective and one batch of its sampler's shape."""
    from raysteal.models.base import make_config
    from raysteal.training.config import make_train_config
    from raysteal.training.trainer import seeded_model

    g = torch.Generator().manual_seed(0)
    if name == "sasrec":
        model_cfg = make_config({"model": "sasrec", "max_len": args.length})
        users, items = 0, ML1M_ITEMS
        seqs = torch.randint(0, items, (args.sequences, args.length + 1), generator=g)
        batch = {"inputs": seqs[:, :-1].contiguous(), "targets": seqs[:, 1:].contiguous()}
    else:
        model_cfg = make_config({"model": "bpr", "embedding_dim": 64})
        users, items = 3020, ML1M_ITEMS
        batch = {
            "users": torch.randint(0, users, (2048,), generator=g),
            "pos": torch.randint(0, items, (2048,), generator=g),
            "neg": torch.randint(0, items, (2048, 1), generator=g),
            "count": torch.ones(2048),
        }
    train_cfg = make_train_config({"epochs": 1, "lr": 3e-3})
    model = seeded_model(model_cfg, users, items, seed=0).train()
    objective = gro.gro_objective(
        gro.make_gro_config({"strength": 0.1, "k": 100}), model_cfg, train_cfg, users, items, seed=0, device=torch.device("cpu")
    )
    return model, objective, batch


def one_step(model: Any, objective: Any, batch: dict[str, torch.Tensor], old: bool) -> tuple[float, float, list[torch.Tensor]]:
    """``(CPU seconds, loss, target gradients)`` of one GRO step (the student steps inside it)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the target's own dropout masks: the same on both paths
    with old_path(old):
        began = time.thread_time()
        loss = objective(model, batch)
        loss.backward()
        seconds = time.thread_time() - began
    return seconds, float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    model, objective, batch = setting(name, args)
    start_model, start_objective = copy.deepcopy(model.state_dict()), copy.deepcopy(objective)

    def fresh() -> Any:
        model.load_state_dict(start_model)
        return copy.deepcopy(start_objective)

    _, loss_old, grads_old = one_step(model, fresh(), batch, old=True)
    _, loss_new, grads_new = one_step(model, fresh(), batch, old=False)
    checks = same_loss_and_gradients(f"{name} GRO step", (loss_old, grads_old), (loss_new, grads_new))
    timing = alternating_rounds(
        args.rounds, lambda: one_step(model, fresh(), batch, old=True)[0], lambda: one_step(model, fresh(), batch, old=False)[0]
    )
    return {"model": name, "checks": checks, **timing}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="sasrec,bpr")
    parser.add_argument("--sequences", type=int, default=128)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    require_positive(parser, args, "sequences", "length", "rounds", "threads")
    models = [m for m in args.models.split(",") if m]
    if not models or any(m not in ("sasrec", "bpr") for m in models):
        parser.error(f"--models takes sasrec and/or bpr, got {args.models!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        results = [bench_model(m, args) for m in models]
    finally:
        torch.set_num_threads(threads)
    report = {
        "benchmark": "gro_step",
        "device": device_name("cpu"),
        "threads": args.threads,
        "torch": torch.__version__,
        "setting": {"sequences": args.sequences, "length": args.length, "items": ML1M_ITEMS, "rounds": args.rounds},
        "models": results,
    }
    for r in results:
        print(
            f"{r['model']}: one GRO step (forward, student step, backward), {args.threads} thread(s): old {r['old_seconds_cpu']:.3f} s, "
            f"new {r['new_seconds_cpu']:.3f} s CPU, {r['speedup_median_of_pairs']:.2f}x (median of {args.rounds} pairs)"
        )
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
