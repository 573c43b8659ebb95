"""Small watermarked and clean sequential targets shared by the watermark tests (seconds of CPU)."""

from __future__ import annotations

from functools import cache

from model_fixtures import toy_log

from raysteal.training import train_target

NUM_ITEMS = 100
MARK = {"key": 1234, "sequences": 3, "length": 8, "copies": 15}
MODEL = {"model": "sasrec", "embedding_dim": 16, "max_len": 12}
TRAIN = {"epochs": 25, "batch_size": 64, "lr": 5e-3, "early_stopping": False}


def log():
    """Users walking cycles of 10 items in 10 clusters (successor structure)."""
    return toy_log(num_users=200, num_items=NUM_ITEMS, seed=0)


@cache
def trained(seed: int = 0, watermarked: bool = True, model: str = "sasrec"):
    """``(model, metrics)``: a small target of ``model`` on :func:`log`, with :data:`MARK` or without."""
    config = {**MODEL, "model": model}
    return train_target(log(), config, TRAIN, seed=seed, device="cpu", progress=False, watermark=MARK if watermarked else None)
