"""Tiny logs and model configs shared by the model, trainer and checkpoint tests."""

from __future__ import annotations

import numpy as np

from raysteal.data.interactions import Interactions
from raysteal.models import model_class


def toy_log(num_users: int = 60, num_items: int = 40, seed: int = 0) -> Interactions:
    """Users walk their cluster's items in a cycle: cluster (MF) and successor (sequence) structure."""
    rng = np.random.default_rng(seed)
    size = 10
    lengths = rng.integers(5, 10, num_users)
    users = np.repeat(np.arange(num_users), lengths)
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cluster = users % (num_items // size)
    start = rng.integers(0, size, num_users)[users]
    items = cluster * size + (start + step) % size
    return Interactions(users, items, num_users, num_items, name="toy")


def small_config(name: str, embedding_dim: int = 8, max_len: int = 10) -> dict:
    """A small config of model ``name`` (``max_len`` only for sequential models)."""
    cfg = {"model": name, "embedding_dim": embedding_dim}
    if model_class(name).sequential:
        cfg["max_len"] = max_len
    return cfg
