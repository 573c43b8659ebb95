"""Ranked lists of any model for a set of users, seen items excluded (Zhu et al. Eq. 2): what the
simulator compares to score a clone (Agreement, Eq. 3) — never available to an attack."""

from __future__ import annotations

import numpy as np
import torch

from raysteal.data.interactions import Interactions
from raysteal.metrics import csr_select, topk_items
from raysteal.models.base import Recommender
from raysteal.training.trainer import resolve_device


@torch.no_grad()
def top_k_lists(
    model: Recommender,
    users: np.ndarray,
    k: int,
    seen: Interactions | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 1024,
) -> np.ndarray:
    """``int64 [len(users), k]``: each user's ``k`` best-scored items, best first, excluding the
    items ``seen`` holds for that user (``seen``'s user ids are the model's user ids)."""
    dev = resolve_device(device)
    model.to(dev).eval()
    users = np.asarray(users, dtype=np.int64)
    out = np.empty((users.size, k), dtype=np.int64)
    for start in range(0, users.size, batch_size):
        batch = users[start : start + batch_size]
        scores = model.score(torch.as_tensor(batch, device=dev)).float()
        exclude = None
        if seen is not None:
            ptr, idx = csr_select(seen.indptr, seen.items, batch)
            exclude = (torch.as_tensor(ptr, device=dev), torch.as_tensor(idx, device=dev))
        out[start : start + batch.size] = topk_items(scores, k, exclude=exclude).cpu().numpy()
    return out
