"""Small trained-ish targets for oracle tests (a BPR-MF on a random log; no files)."""

from __future__ import annotations

import numpy as np
import torch

from raysteal.data.interactions import Interactions
from raysteal.models import build_model


def random_log(num_users: int = 40, num_items: int = 120, per_user: int = 8, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    items = np.concatenate([rng.choice(num_items, per_user, replace=False) for _ in range(num_users)])
    users = np.repeat(np.arange(num_users), per_user)
    return Interactions(users=users, items=items, num_users=num_users, num_items=num_items, name="random")


def bpr_target(log: Interactions, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model({"model": "bpr", "embedding_dim": 8, "init_std": 1.0}, log.num_users, log.num_items)
    return model.eval()


def untrained_run_data(k: int, **synthetic):
    """``(target, loo, RunData)``: an untrained BPR on the target half of a synthetic log (the
    ``synthetic`` dataset options), with its top-``k`` truth lists -- the plumbing of a
    collaborative run, not its accuracy."""
    from raysteal.data import load_dataset, split_target_auxiliary
    from raysteal.data.splits import leave_one_out
    from raysteal.experiment.context import RunData
    from raysteal.oracle import RankingEngine
    from raysteal.training import seeded_model

    halves = split_target_auxiliary(load_dataset("synthetic", **synthetic), seed=0)
    loo = leave_one_out(halves.target)
    target = seeded_model({"model": "bpr", "embedding_dim": 8}, loo.train.num_users, loo.train.num_items, seed=0)
    truth = RankingEngine(target, loo.train.indptr, loo.train.items).topk(np.arange(loo.train.num_users), k)
    return target, loo, RunData("synthetic", "bpr", loo.train, loo.test, halves.auxiliary, truth)
