"""The attack objectives of Zhu et al. §4, as functions of clone scores (architecture-free).

* Eq. 4, BPR: ``L_BPR(r_ip, r_in) = −ln σ(r_ip − r_in)``.
* Eq. 9, margin hinge: ``L_Hinge(r_ip, r_in) = max(0, m − (r_ip − r_in))``.
* Eq. 10–12, the stealing loss of one user's queried list ``R_i = (j_1, ..., j_K)``:
  ``L_S = L_r + L_p`` with the ranking loss ``L_r = Σ_j L_rank(r_ij, r_ij')`` over the K−1
  consecutive pairs (``j'`` the item after ``j``) and the item loss
  ``L_p = Σ_j Σ_{k ∈ n_j} L_item(r_ij, r_ik)`` against sampled negatives ``n_j`` not in the list.
  ``L_rank`` and ``L_item`` are each BPR or Hinge: the four combinations of Table 7, named
  "rank+item" ("BPR+Hinge" is PTQ/PTAQ's default, "Hinge+Hinge" QSD's, App. A.2).
* The pointwise logistic loss (LMF, Johnson 2014 Eq. 3 with unit confidence; NCF, He et al. 2017
  Eq. 7), offered as the data objective of LMF/NCF-style clones.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from raysteal.errors import ConfigError

PairLoss = Literal["bpr", "hinge"]
DataLoss = Literal["bpr", "logistic"]


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Eq. 4, elementwise: ``−ln σ(pos − neg)`` (broadcasting)."""
    return -F.logsigmoid(pos - neg)


def hinge_loss(pos: torch.Tensor, neg: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Eq. 9, elementwise: ``max(0, m − (pos − neg))`` (broadcasting)."""
    return F.relu(margin - (pos - neg))


def pair_loss(kind: PairLoss, pos: torch.Tensor, neg: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Eq. 4 (``"bpr"``) or Eq. 9 (``"hinge"``), elementwise."""
    if kind == "bpr":
        return bpr_loss(pos, neg)
    if kind == "hinge":
        return hinge_loss(pos, neg, margin)
    raise ConfigError(f"pair loss must be 'bpr' or 'hinge', got {kind!r}")


def data_loss(kind: DataLoss, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean loss of positives ``pos [B]`` against their sampled negatives ``neg [B, n]``.

    ``"bpr"``: Eq. 4 averaged over the B·n triples (Zhu et al. §4.1, Alg. 1 lines 3–13).
    ``"logistic"``: ``softplus(−pos) + Σ_n softplus(neg)`` averaged over B (pointwise likelihood).
    """
    if kind == "bpr":
        return bpr_loss(pos[:, None], neg).mean()
    if kind == "logistic":
        return (F.softplus(-pos) + F.softplus(neg).sum(-1)).mean()
    raise ConfigError(f"data loss must be 'bpr' or 'logistic', got {kind!r}")


def stealing_loss(
    list_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    valid: torch.Tensor | None = None,
    rank_loss: PairLoss = "bpr",
    item_loss: PairLoss = "hinge",
    margin: float = 0.5,
) -> torch.Tensor:
    """Per-user stealing loss ``L_S^i`` (Eq. 10–12): ``[B]``.

    ``list_scores [B, K]``: the clone's scores of each queried list, in the target's order.
    ``neg_scores [B, K, n]``: its scores of the ``n`` negatives sampled for each list item.
    ``valid [B, K]`` (optional): false on padding (shorter or defended lists); a ranking pair
    counts only when both of its items are valid, an item term only when its item is.
    """
    if list_scores.ndim != 2 or neg_scores.ndim != 3 or neg_scores.shape[:2] != list_scores.shape:
        raise ConfigError(
            f"stealing_loss: need list_scores [B, K] and neg_scores [B, K, n], got {tuple(list_scores.shape)} and {tuple(neg_scores.shape)}"
        )
    if valid is None:
        valid = torch.ones_like(list_scores, dtype=torch.bool)
    ranking = pair_loss(rank_loss, list_scores[:, :-1], list_scores[:, 1:], margin)  # Eq. 11
    pair_ok = valid[:, :-1] & valid[:, 1:]
    items = pair_loss(item_loss, list_scores[:, :, None], neg_scores, margin).sum(-1)  # Eq. 12
    zero = torch.zeros((), dtype=ranking.dtype, device=ranking.device)
    return torch.where(pair_ok, ranking, zero).sum(1) + torch.where(valid, items, zero).sum(1)
