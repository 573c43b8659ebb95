"""One training step of a collaborative target (BPR, LMF) on a CPU thread: today's code against
the previous code, in the same run, rounds alternating.

    python benchmarks/mf_step.py [--rounds 7] [--models bpr,lmf] [--json results/mf_step.json]

The setting of Zhu et al.'s targets, auxiliary models and clones (and of ``raysteal run``'s
collaborative targets): the preset's model and batch (d = 64, batch 2,048; BPR one negative, LMF
four, drawn uniformly, both rejecting the user's own items) on a log of ML-1M's target half's size and density
(3,020 users, 3,706 items, 481,038 pairs drawn at random; ``--users`` etc.). One step is what the
trainer does per batch: draw the batch (its negatives redrawn where the user has the item), the
loss, backward, AdamW.

* **old** — the code before this benchmark, kept here: the negatives' membership test a binary
  search over the log's sorted ``user * items + item`` keys (:func:`reference_negatives`),
  the negatives' scores by ``einsum("bd,bnd->bn")`` (:func:`reference_loss`), AdamW one
  elementwise op at a time (torch's default on a CPU, ``foreach=False``);
* **new** — the library's code: :class:`~raysteal.models.pair_samplers.SeenPairs` (a bitmap),
  :func:`~raysteal.models.pair_samplers.pair_scores` and :func:`~raysteal.training.step.adamw`
  (fused).

Before timing, the run checks that both draw the same negatives from the same generator state and
give the same loss and gradients (to float rounding), and the same weights after a step. Each
phase is timed by this thread's CPU time (``time.thread_time``), so other processes on the cores
count against neither; reported: the median seconds of each phase and of the step, and the ratio
old / new of the step (median of the rounds' pairs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import device_name, require_positive, write_json  # noqa: E402

from raysteal.data.interactions import Interactions  # noqa: E402
from raysteal.models.base import Recommender  # noqa: E402
from raysteal.models.pair_samplers import PairSampler, is_seen, seen_keys  # noqa: E402
from raysteal.training.presets import preset  # noqa: E402
from raysteal.training.step import adamw  # noqa: E402
from raysteal.training.trainer import seeded_model  # noqa: E402

PHASES = ("negatives", "loss", "backward", "optimizer")


def random_log(users: int, items: int, pairs: int, seed: int = 0) -> Interactions:
    """``pairs`` distinct random (user, item) pairs, every user with at least one."""
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, users * items, size=int(pairs * 1.05), dtype=np.int64))[:pairs]
    keys[:users] = np.arange(users, dtype=np.int64) * items  # every user present
    keys = np.unique(keys)
    return Interactions(users=keys // items, items=keys % items, num_users=users, num_items=items, name="random")


def reference_negatives(
    users: torch.Tensor, count: int, num_items: int, generator: torch.Generator, keys: torch.Tensor, rounds: int = 20
) -> torch.Tensor:
    """The previous ``uniform_negatives``: rejection by a binary search over sorted keys."""
    neg = torch.randint(0, num_items, (users.shape[0], count), generator=generator)
    flat = neg.view(-1)
    owner = users.repeat_interleave(count)
    redo = torch.nonzero(is_seen(keys, owner, flat, num_items)).view(-1)
    for _ in range(rounds):
        if redo.numel() == 0:
            break
        flat[redo] = torch.randint(0, num_items, (redo.numel(),), generator=generator)
        redo = redo[is_seen(keys, owner[redo], flat[redo], num_items)]
    return neg


def reference_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The previous BPR / LMF losses, the negatives' scores by einsum."""
    cfg = model.config
    users = batch["users"]
    u = model.user_emb(users)
    i = model.item_emb(batch["pos"])
    j = model.item_emb(batch["neg"])
    reg = (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum() / j.shape[1]) / u.shape[0]
    if cfg.model == "bpr":
        x_ui = (u * i).sum(-1, keepdim=True)
        x_uj = torch.einsum("bd,bnd->bn", u, j)
        return -F.logsigmoid(x_ui - x_uj).mean() + cfg.reg * reg
    bu = model.user_bias(users)
    s_pos = (u * i).sum(-1) + bu[:, 0] + model.item_bias(batch["pos"])[:, 0]
    s_neg = torch.einsum("bd,bnd->bn", u, j) + bu + model.item_bias(batch["neg"])[..., 0]
    confidence = cfg.alpha * batch["count"].to(s_pos.dtype)
    nll = confidence * F.softplus(-s_pos) + cfg.neg_weight * F.softplus(s_neg).sum(-1)
    return nll.mean() + 0.5 * cfg.reg * reg


class Path_:
    """One path's sampler, loss and optimiser over its own copy of the model."""

    def __init__(self, name: str, model: Recommender, sampler: PairSampler, log: Interactions, lr: float):
        self.name, self.model, self.sampler = name, model, sampler
        self.keys = seen_keys(log)
        params = list(model.parameters())
        self.optimizer = (
            torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=False) if name == "old" else adamw(params, lr=lr, weight_decay=0.0)
        )
        self.loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] = (
            (lambda b: reference_loss(model, b)) if name == "old" else model.loss
        )

    def batch(self, rows: torch.Tensor, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], float]:
        s = self.sampler
        users = s.users[rows]
        start = time.thread_time()
        if self.name == "old":
            neg = reference_negatives(users, s.num_negatives, s.num_items, generator, self.keys)
        else:
            from raysteal.models.pair_samplers import uniform_negatives  # the library's sampler (benchmark)

            neg = uniform_negatives(users, s.num_negatives, s.num_items, generator, s.seen)
        seconds = time.thread_time() - start
        return {"users": users, "pos": s.items[rows], "neg": neg, "count": s.counts[rows]}, seconds

    def step(self, rows: torch.Tensor, seed: int) -> tuple[dict[str, float], torch.Tensor, dict[str, torch.Tensor]]:
        times: dict[str, float] = {}
        batch, times["negatives"] = self.batch(rows, torch.Generator().manual_seed(seed))
        start = time.thread_time()
        loss = self.loss_fn(batch)
        times["loss"] = time.thread_time() - start
        self.optimizer.zero_grad(set_to_none=True)
        start = time.thread_time()
        loss.backward()
        times["backward"] = time.thread_time() - start
        start = time.thread_time()
        self.optimizer.step()
        times["optimizer"] = time.thread_time() - start
        times["step"] = sum(times[p] for p in PHASES)
        return times, loss.detach(), batch


def check_same(model_name: str, old: Path_, new: Path_, rows: torch.Tensor) -> dict[str, float]:
    """Same negatives, loss, gradients (before the step) and weights (after one)."""
    batch_old, _ = old.batch(rows, torch.Generator().manual_seed(1))
    batch_new, _ = new.batch(rows, torch.Generator().manual_seed(1))
    if not torch.equal(batch_old["neg"], batch_new["neg"]):
        raise SystemExit(f"{model_name}: the two paths drew different negatives")
    losses, grads = [], []
    for path, batch in ((old, batch_old), (new, batch_new)):
        path.optimizer.zero_grad(set_to_none=True)
        loss = path.loss_fn(batch)
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append([p.grad.clone() for p in path.model.parameters() if p.grad is not None])
        path.optimizer.step()
    weights = [max(float((a - b).detach().abs().max()) for a, b in zip(old.model.parameters(), new.model.parameters()))]
    checks = {
        "loss_old": losses[0],
        "loss_new": losses[1],
        "max_grad_abs_diff": max(float((a - b).abs().max()) for a, b in zip(*grads)),
        "max_grad_abs": max(float(a.abs().max()) for a in grads[0]),
        "max_weight_abs_diff_after_step": weights[0],
    }
    if abs(losses[0] - losses[1]) > 1e-5 * max(1.0, abs(losses[0])) or checks["max_grad_abs_diff"] > 1e-6 + 1e-4 * checks["max_grad_abs"]:
        raise SystemExit(f"{model_name}: the two paths differ: {checks}")
    if checks["max_weight_abs_diff_after_step"] > 1e-5:
        raise SystemExit(f"{model_name}: the weights differ after one step: {checks}")
    return checks


def bench_model(model_name: str, log: Interactions, rounds: int) -> dict[str, Any]:
    model_cfg, train_cfg = preset(model_name)
    model_cfg = {**model_cfg, "negative_candidates": 1}  # uniform draws, as Zhu et al.'s targets and every clone
    batch_size, lr = int(train_cfg["batch_size"]), float(train_cfg["lr"])
    paths = {}
    for name in ("old", "new"):
        model = seeded_model(model_cfg, log.num_users, log.num_items, seed=0)
        model.train()
        sampler = model.make_sampler(log, batch_size)
        assert isinstance(sampler, PairSampler)
        paths[name] = Path_(name, model, sampler, log, lr)
    order = torch.randperm(log.num_interactions, generator=torch.Generator().manual_seed(0))
    checks = check_same(model_name, paths["old"], paths["new"], order[:batch_size])
    times: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for r in range(rounds + 2):  # two warm-up rounds, not kept
        rows = order[(r + 1) * batch_size : (r + 2) * batch_size]
        for name in ("old", "new"):
            got, _, _ = paths[name].step(rows, seed=100 + r)
            if r >= 2:
                times[name].append(got)
    medians = {name: {p: statistics.median(t[p] for t in times[name]) for p in (*PHASES, "step")} for name in times}
    ratios = [o["step"] / n["step"] for o, n in zip(times["old"], times["new"])]
    return {
        "model": model_name,
        "batch_size": batch_size,
        "num_negatives": int(paths["new"].sampler.num_negatives),
        "checks": checks,
        "old_seconds_cpu": medians["old"],
        "new_seconds_cpu": medians["new"],
        "speedup_median_of_pairs": statistics.median(ratios),
        "rounds_step_cpu": {name: [t["step"] for t in times[name]] for name in times},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--models", default="bpr,lmf")
    parser.add_argument("--users", type=int, default=3020)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--pairs", type=int, default=481038)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    require_positive(parser, args, "users", "items", "pairs", "rounds", "threads")
    if args.pairs > args.users * args.items // 2:
        parser.error(f"--pairs ({args.pairs}) must be at most half of users x items ({args.users * args.items})")
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in ("bpr", "lmf")]
    if unknown or not models:
        parser.error(f"--models takes bpr and/or lmf, got {args.models!r}")
    if args.pairs < 2049 * (args.rounds + 3):
        parser.error(f"--pairs ({args.pairs}) must hold {args.rounds + 3} batches of 2,048")
    torch.set_num_threads(args.threads)
    log = random_log(args.users, args.items, args.pairs)
    results = [bench_model(m, log, args.rounds) for m in models]
    report = {
        "benchmark": "mf_step",
        "device": device_name("cpu"),
        "threads": args.threads,
        "torch": torch.__version__,
        "setting": {"users": args.users, "items": args.items, "pairs": log.num_interactions, "rounds": args.rounds},
        "models": results,
    }
    for r in results:
        old, new = r["old_seconds_cpu"], r["new_seconds_cpu"]
        phases = ", ".join(f"{p} {old[p] * 1e3:.2f} -> {new[p] * 1e3:.2f}" for p in PHASES)
        print(
            f"{r['model']} step (batch {r['batch_size']}, {r['num_negatives']} negative(s)), ms CPU: "
            f"{old['step'] * 1e3:.2f} -> {new['step'] * 1e3:.2f}, {r['speedup_median_of_pairs']:.2f}x (median of {args.rounds} pairs); {phases}"
        )
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
