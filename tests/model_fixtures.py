"""Tiny logs and model configs shared by the model, trainer and checkpoint tests, and the check
that a committed ``benchmarks/targets.py`` row was trained with given settings."""

from __future__ import annotations

from typing import Any

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


def trained_with(row: dict[str, Any], model_overrides: dict[str, Any] | None = None, train_overrides: dict[str, Any] | None = None) -> bool:
    """Whether the ``benchmarks/targets.py`` JSON ``row`` was trained with its model's preset under
    these overrides, unchanged (its train config as
    :func:`~raysteal.training.config.scaled_to_log` scales it to the row's steps per epoch; fields
    added since the row was written are left out)."""
    from raysteal.models import make_config
    from raysteal.training.config import make_train_config, scaled_to_log
    from raysteal.training.presets import preset_with
    from raysteal.training.target_cache import without_added_fields

    model, train = preset_with(row["model"], dict(model_overrides or {}), dict(train_overrides or {}))
    if without_added_fields(make_config(model).model_dump(mode="json")) != without_added_fields(row["model_config"]):
        return False
    scaled = scaled_to_log(make_train_config(train), int(row["steps_per_epoch"]), int(row["test_users"])).model_dump(mode="json")
    return without_added_fields(scaled) == without_added_fields(row["train_config"])
