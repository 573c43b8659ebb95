"""Evaluation edge cases: a user who has interacted with every item has no sampled negatives."""

from __future__ import annotations

import numpy as np

from raysteal.data.interactions import Interactions
from raysteal.data.splits import leave_one_out
from raysteal.models import build_model
from raysteal.training import evaluate


def test_user_who_saw_every_item_is_left_out_of_the_sampled_protocol_only():
    items = np.concatenate([np.arange(6), [0, 1, 2, 3], [4, 5, 0, 1]])
    users = np.repeat([0, 1, 2], [6, 4, 4])
    log = Interactions(users=users, items=items, num_users=3, num_items=6)
    split = leave_one_out(log)
    model = build_model({"model": "bpr", "embedding_dim": 4}, 3, 6)
    out = evaluate(model, split, "test", k=2, num_negatives=3)
    assert out["users"] == 3
    assert np.isfinite(out["hr@2_3neg"]) and np.isfinite(out["hr@2_full"])
    assert out["per_user"]["rank_3neg"][0] == -1  # user 0 has no unseen item
    assert (out["per_user"]["rank_3neg"][1:] >= 0).all()
