"""Metrics, all vectorised (torch inside; numpy or torch in) with one value per user.

* :mod:`~raysteal.metrics.agreement` — fidelity of a clone's ranked lists to the target's
  (Zhu et al. Agreement@K, Yue et al. Agr@1/Agr@K/exact match/KL on the list, RBO, Jaccard).
* :mod:`~raysteal.metrics.ranking` — accuracy on held-out items (full ranking and the
  100-sampled-negatives protocol): HR/NDCG@K, Recall/NDCG@K for item sets.
* :mod:`~raysteal.metrics.summary` — NaN-skipping means, overall and per group (head/tail).
"""

from raysteal.metrics.agreement import (
    agreement_at,
    agreement_at_k,
    exact_match_at_k,
    jaccard_at_k,
    list_kl,
    rank_biased_overlap,
    top1_agreement,
)
from raysteal.metrics.ranking import (
    csr_select,
    hit_rate_at_k,
    ndcg_at_k,
    ndcg_at_k_sets,
    rank_of_target,
    recall_at_k,
    sample_negatives,
    sampled_rank_of_target,
    topk_items,
)
from raysteal.metrics.summary import mean, mean_by_group

__all__ = [
    "agreement_at",
    "agreement_at_k",
    "csr_select",
    "exact_match_at_k",
    "hit_rate_at_k",
    "jaccard_at_k",
    "list_kl",
    "mean",
    "mean_by_group",
    "ndcg_at_k",
    "ndcg_at_k_sets",
    "rank_biased_overlap",
    "rank_of_target",
    "recall_at_k",
    "sample_negatives",
    "sampled_rank_of_target",
    "top1_agreement",
    "topk_items",
]
