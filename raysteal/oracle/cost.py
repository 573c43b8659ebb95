"""What a defense costs the target itself: its own Recall/NDCG@K with and without the defense
(the trade-off of Zhu et al. Fig. 8: mixing popular items misleads clones but hurts users)."""

from __future__ import annotations

import numpy as np

from raysteal.metrics import mean, ndcg_at_k_sets, recall_at_k
from raysteal.oracle.defenses import DefenseChain
from raysteal.oracle.engine import RankingEngine


def defense_cost(
    engine: RankingEngine,
    defenses: DefenseChain,
    inputs: np.ndarray,
    relevant: np.ndarray,
    k: int = 50,
    seed: int = 0,
) -> dict[str, float]:
    """Recall@k and NDCG@k of the target's answers for ``inputs`` (user ids or sequences)
    against held-out ``relevant`` items (``[B]`` or padded ``[B, M]``), undefended and defended.

    Returns ``{"recall@k", "ndcg@k", "recall@k/defended", "ndcg@k/defended", "recall_drop",
    "ndcg_drop"}`` (drops are relative: 0.2 means 20% lower).
    """
    arr = engine.validate(inputs, k)
    clean = engine.topk(arr, k)
    defended = defenses.served(clean, np.random.default_rng(seed))  # a truncated answer: a list of k, its tail empty
    out = {
        f"recall@{k}": mean(recall_at_k(clean, relevant, k)),
        f"ndcg@{k}": mean(ndcg_at_k_sets(clean, relevant, k)),
        f"recall@{k}/defended": mean(recall_at_k(defended, relevant, k)),
        f"ndcg@{k}/defended": mean(ndcg_at_k_sets(defended, relevant, k)),
    }
    for metric in ("recall", "ndcg"):
        base = out[f"{metric}@{k}"]
        out[f"{metric}_drop"] = (base - out[f"{metric}@{k}/defended"]) / base if base > 0 else 0.0
    return out
