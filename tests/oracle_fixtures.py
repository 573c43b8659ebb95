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
