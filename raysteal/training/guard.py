"""The popularity guard: every target's accuracy beside the popularity recommender's.

A target that has not learned beyond item popularity is copied by the popularity clone, and an
attack's agreement with it then measures popularity, not theft. So every prepared target is
evaluated beside the *popularity recommender* — the training log's most interacted-with items,
each user's seen items excluded — on the same users, with the same protocol
(:func:`raysteal.training.evaluate.evaluate`: the leave-one-out test item ranked among every item
the user has not interacted with in training or validation, and against the same 100 sampled
negatives; ties count against the held-out item). The *lift* is the target's full-ranking
NDCG@10 over popularity's; a target below :data:`DEFAULT_WARN_LIFT` draws a warning, and one
below a required lift (``raysteal run --require-target-lift``, the experiment's
``require_target_lift``) is not attacked.

Popularity breaks ties between equally popular items by the lower item id, so its scores are
all distinct and its lists deterministic.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from raysteal.data.interactions import Interactions
from raysteal.data.splits import LeaveOneOut
from raysteal.metrics import csr_select, topk_items
from raysteal.training.evaluate import evaluate

DEFAULT_WARN_LIFT = 1.2
"""A target whose full-ranking NDCG@10 is below this multiple of popularity's draws a warning."""
LIFT_METRIC = "ndcg@10_full"
"""What the lift divides: full-ranking NDCG@10 (``target / popularity``, the same users)."""
FIGURES = ("hr@10_full", "ndcg@10_full", "hr@10_100neg", "ndcg@10_100neg")


def popularity_scores(item_counts: np.ndarray) -> np.ndarray:
    """Distinct ``float32`` scores ordering items by count, the lower id first among equal counts
    (the most popular item scores ``num_items``, the least popular 1)."""
    counts = np.asarray(item_counts)
    order = np.argsort(-counts.astype(np.int64), kind="stable")
    scores = np.empty(counts.size, dtype=np.float32)
    scores[order] = np.arange(counts.size, 0, -1, dtype=np.float32)
    return scores


class PopularityRecommender(nn.Module):
    """The popularity recommender in the shape :func:`evaluate` scores: every user (or input
    sequence) gets the same :func:`popularity_scores`."""

    sequential: ClassVar[bool] = False
    scores: torch.Tensor  # a buffer (moves with the module)

    def __init__(self, item_counts: np.ndarray):
        super().__init__()
        self.register_buffer("scores", torch.from_numpy(popularity_scores(item_counts)))
        self.num_items = int(self.scores.numel())

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.scores[None, :].expand(inputs.shape[0], -1)


def popularity_lists(train: Interactions, users: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """The popularity recommender's top-``k`` for ``users`` of ``train`` (each user's ``train``
    items excluded), ``int64 [len(users), k]``, ``-1``-padded where fewer than ``k`` items remain."""
    users = np.asarray(users, dtype=np.int64)
    scores = torch.from_numpy(popularity_scores(train.item_counts))
    k = min(int(k), train.num_items)
    out = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), chunk):
        part = users[start : start + chunk]
        block = scores[None, :].expand(len(part), -1)
        out[start : start + len(part)] = np.asarray(topk_items(block.numpy(), k, exclude=csr_select(train.indptr, train.items, part)))
    return out


def guard_figures(
    model: Any,
    split: LeaveOneOut,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """The target and the popularity recommender on the same users (every user with a test item)
    and protocol. Returns ``(figures, ranks)``: ``figures`` holds ``users``, ``target_<m>`` and
    ``popularity_<m>`` for each of :data:`FIGURES`, and ``target_lift``; ``ranks`` is the target's
    0-based full-ranking rank of each user's test item, ``int64 [num_users]`` (``-1``: no test
    item), the one definition of a target's accuracy in result rows (:func:`ranked_accuracy`)."""
    target = evaluate(model, split, "test", k=10, num_negatives=100, seed=seed, device=device)
    users = target["per_user"]["users"]
    popular = evaluate(PopularityRecommender(split.train.item_counts), split, "test", k=10, num_negatives=100, seed=seed, users=users)
    figures: dict[str, Any] = {"users": int(users.size)}
    for name in FIGURES:
        figures[f"target_{name}"] = float(target[name])
        figures[f"popularity_{name}"] = float(popular[name])
    figures["target_lift"] = lift(figures[f"target_{LIFT_METRIC}"], figures[f"popularity_{LIFT_METRIC}"])
    ranks = np.full(split.train.num_users, -1, dtype=np.int64)
    ranks[users] = target["per_user"]["rank_full"]
    return figures, ranks


def lift(target: float, popularity: float) -> float:
    """``target / popularity``; ``inf`` when popularity scores 0 and the target does not, NaN when both do."""
    if popularity > 0:
        return float(target / popularity)
    return math.inf if target > 0 else math.nan


def row_columns(figures: dict[str, Any]) -> dict[str, float]:
    """The guard's columns of every result row of this target: ``target_lift``, and
    ``target_test_<m>`` / ``popularity_test_<m>`` for each of :data:`FIGURES` (the same users)."""
    out: dict[str, float] = {"target_lift": float(figures["target_lift"])}
    for name in FIGURES:
        out[f"target_test_{name}"] = float(figures[f"target_{name}"])
        out[f"popularity_test_{name}"] = float(figures[f"popularity_{name}"])
    return out


def target_columns(target_metrics: dict[str, Any]) -> dict[str, float]:
    """:func:`row_columns` of a prepared target's metrics (``RunData.target_metrics``), or nothing
    when the guard did not measure it."""
    figures = target_metrics.get("guard")
    return row_columns(figures) if figures else {}


def describe(figures: dict[str, Any], what: str) -> str:
    """One line: the target's and popularity's HR/NDCG@10 (full ranking and 100 negatives) and the lift."""
    f = figures

    def pair(who: str) -> str:
        return (
            f"NDCG@10 {f[f'{who}_ndcg@10_full']:.4f} / HR@10 {f[f'{who}_hr@10_full']:.4f} full, "
            f"NDCG@10 {f[f'{who}_ndcg@10_100neg']:.4f} / HR@10 {f[f'{who}_hr@10_100neg']:.4f} 100 neg"
        )

    return (
        f"target {what} on {f['users']} test users: {pair('target')}; popularity: {pair('popularity')}; "
        f"lift {f['target_lift']:.2f}x popularity's NDCG@10 (full ranking)"
    )


def below(figures: dict[str, Any], threshold: float | None) -> bool:
    """Whether the target's lift is under ``threshold`` (a NaN lift — nothing learnt by either — is under any)."""
    if threshold is None:
        return False
    value = float(figures["target_lift"])
    return not value >= threshold


def warning_text(figures: dict[str, Any], what: str, threshold: float) -> str:
    """The warning for a target under the warning threshold (names target and dataset)."""
    return (
        f"target {what}: full-ranking NDCG@10 {figures['target_ndcg@10_full']:.4f} is {figures['target_lift']:.2f}x the "
        f"popularity recommender's {figures['popularity_ndcg@10_full']:.4f} on the same {figures['users']} users, under "
        f"{threshold:g}x: attacks on it measure popularity as much as theft (train it longer, or check the dataset)"
    )


def refusal_text(figures: dict[str, Any], what: str, required: float) -> str:
    """The one-line error for a target under the required lift."""
    return (
        f"target {what} not attacked: its full-ranking NDCG@10 {figures['target_ndcg@10_full']:.4f} is "
        f"{figures['target_lift']:.2f}x the popularity recommender's {figures['popularity_ndcg@10_full']:.4f} on the same "
        f"{figures['users']} users, under the required {required:g}x (require_target_lift / --require-target-lift)"
    )


def ranked_accuracy(ranks: np.ndarray, k: int) -> tuple[float, float]:
    """``(Recall@k, NDCG@k)`` of one held-out item per user from its 0-based ``ranks`` (``-1``:
    no held-out item, skipped): Recall@k = HR@k = ``rank < k``, NDCG@k = ``1 / log2(rank + 2)``.
    NaN when no rank is given."""
    r = np.asarray(ranks, dtype=np.int64)
    r = r[r >= 0]
    if r.size == 0:
        return float("nan"), float("nan")
    hit = r < k
    return float(hit.mean()), float(np.where(hit, 1.0 / np.log2(r + 2.0), 0.0).mean())
