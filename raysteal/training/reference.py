"""Two closed-form item-to-item recommenders, as references beside a target and popularity.

When a target barely beats popularity (:mod:`raysteal.training.guard`), the question is whether
the data holds nothing more (a popularity-bound log) or the target's recipe misses what is there.
These answer it without any training loop:

* **Item-kNN** (Sarwar et al., WWW 2001): ``score(u, j) = Σ_{i ∈ I_u} s_ij`` with the asymmetric
  cosine ``s_ij = c_ij / (n_i^α n_j^(1-α))`` (``c_ij``: users who have both items, ``n_i``: users
  who have ``i``; ``α = 0.5`` is the plain cosine), ``s_ii = 0``, optionally only each item's
  ``neighbours`` most similar items kept.
* **EASE** (Steck, WWW 2019, Eq. 8): the item-item weights ``B`` minimising
  ``‖X − XB‖² + λ‖B‖²`` under ``diag(B) = 0``, in closed form: ``P = (XᵀX + λI)⁻¹``,
  ``B = I − P · diagMat(1 / diag(P))``; ``score(u, ·) = X_u B``.

Both read only the training log (``X``: the binary user-item matrix) and score a user from the
items of their training history, as the collaborative targets do. Both hold a dense
``items × items`` matrix, so catalogues above ``max_items`` are refused.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError

MAX_ITEMS = 20_000
"""Largest catalogue either recommender accepts by default: its dense item-item matrix is
``MAX_ITEMS² × 4`` bytes (1.6 GB)."""


def _check_catalogue(train: Interactions, max_items: int, what: str) -> None:
    if train.num_items > max_items:
        raise ConfigError(
            f"{what}: {train.num_items:,} items need a dense {train.num_items:,}² matrix "
            f"({4 * train.num_items**2 / 1e9:.1f} GB); the limit is {max_items:,} items (max_items)"
        )


def history_matrix(train: Interactions, users: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The binary rows ``X_u`` of ``users`` as a sparse ``float32 [len(users), num_items]``
    (a user's repeated item counts once)."""
    users = np.asarray(users.cpu() if isinstance(users, torch.Tensor) else users, dtype=np.int64)
    starts, ends = train.indptr[users], train.indptr[users + 1]
    lengths = ends - starts
    cols = np.concatenate([train.items[s:e] for s, e in zip(starts, ends, strict=True)]) if users.size else np.empty(0, np.int64)
    rows = np.repeat(np.arange(users.size), lengths)
    dense_keys = np.unique(rows * train.num_items + cols)  # sorted by row, then item; repeats gone
    rows, cols = dense_keys // train.num_items, dense_keys % train.num_items
    return torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, cols])),
        torch.ones(cols.size, dtype=torch.float32),
        size=(users.size, train.num_items),
        is_coalesced=True,
        check_invariants=True,
    )


def cooccurrence(train: Interactions, chunk: int = 4096) -> torch.Tensor:
    """``XᵀX``: dense ``float32 [num_items, num_items]`` (``[i, j]``: users who have both)."""
    gram = torch.zeros(train.num_items, train.num_items)
    for start in range(0, train.num_users, chunk):
        users = np.arange(start, min(start + chunk, train.num_users))
        part = history_matrix(train, users)
        gram += torch.sparse.mm(part.t(), part.to_dense())  # nnz x items multiply-adds, not users x items²
    return gram


class _ItemItemRecommender(nn.Module):
    """A user's scores: their binary training history times an item-item matrix."""

    sequential: ClassVar[bool] = False
    weights: torch.Tensor  # [num_items, num_items], a buffer

    def __init__(self, train: Interactions, weights: torch.Tensor):
        super().__init__()
        self.train_log = train
        self.register_buffer("weights", weights)
        self.num_items = train.num_items

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        history = history_matrix(self.train_log, inputs)
        return torch.sparse.mm(history, self.weights.to(history.device))


class ItemKNN(_ItemItemRecommender):
    """Item-kNN with the asymmetric cosine (Sarwar et al. 2001; ``alpha = 0.5``: cosine)."""

    def __init__(self, train: Interactions, *, alpha: float = 0.5, neighbours: int | None = None, max_items: int = MAX_ITEMS):
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"item-kNN: alpha must be in [0, 1], got {alpha}")
        if neighbours is not None and neighbours < 1:
            raise ConfigError(f"item-kNN: neighbours must be at least 1, got {neighbours}")
        _check_catalogue(train, max_items, "item-kNN")
        gram = cooccurrence(train)
        counts = gram.diagonal().clone().clamp(min=1.0)
        sim = gram / counts[:, None].pow(alpha) / counts[None, :].pow(1.0 - alpha)
        sim.fill_diagonal_(0.0)
        if neighbours is not None and neighbours < train.num_items - 1:  # keep each item's nearest
            top = sim.topk(neighbours, dim=1)
            sim = torch.zeros_like(sim).scatter_(1, top.indices, top.values)
        super().__init__(train, sim)


class EASE(_ItemItemRecommender):
    """EASE (Steck 2019, Eq. 8): ``B = I − P diagMat(1/diag(P))``, ``P = (XᵀX + λI)⁻¹``."""

    def __init__(self, train: Interactions, *, l2: float = 200.0, max_items: int = MAX_ITEMS):
        if not l2 > 0.0:
            raise ConfigError(f"EASE: l2 (lambda) must be positive, got {l2}")
        _check_catalogue(train, max_items, "EASE")
        gram = cooccurrence(train).double()
        gram.diagonal().add_(l2)
        precision = torch.linalg.inv(gram)
        weights = -precision / precision.diagonal()[None, :]
        weights.fill_diagonal_(0.0)
        super().__init__(train, weights.float())


REFERENCES = {"itemknn": ItemKNN, "ease": EASE}
"""The reference recommenders by name."""
