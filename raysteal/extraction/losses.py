"""Yue et al.'s ranking loss for distilling a ranked top-k list into a student (RecSys 2021).

For one queried prefix with black-box list ``(j_1, ..., j_k)`` (best first), student scores
``s`` and sampled negatives ``(n_1, ..., n_q)`` outside the list, Yue et al. (the ranking loss of
their model-extraction section; ``NoDataRankDistillationTrainer.calculate_loss`` in their
released code) minimise::

    L = mean_{i < k}  max(0, m − (s_{j_i} − s_{j_{i+1}}))      (consecutive ranked pairs)
      + mean_{p}      max(0, m − (s_{j_p} − s_{n_p}))          (list items vs negatives)

with ``m = 0.5`` for both terms. The negatives are paired one to one with list items as in their
code (they draw ``q = k``); with ``q ≠ k`` pair ``p`` (``p < max(k, q)``) takes list item
``p mod k`` and negative ``p mod q``. Means run over the whole batch of prefixes, skipping
padding: a ranked pair counts when both items are valid (``>= 0``), a negative pair when the list
item and the negative are both valid.

The loss reads the scores of the listed items and the negatives only: :func:`ranking_loss_scored`
takes just those (DFME's objective computes no others, see
:meth:`~raysteal.models.sequence_layers.ItemEmbedding.scores_at`); :func:`ranking_loss` gathers
them from full-catalogue scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raysteal.errors import ConfigError


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


class _HingeMean(torch.autograd.Function):
    """``_masked_mean(relu(margin - (pos - neg)), valid)`` in a few passes, with the same value and
    the same gradients as the composed ops (each step is the same float operation: ``margin - x``
    as ``-x + margin``, the gradient ``(g / count) * weight`` kept where the hinge is positive)."""

    @staticmethod
    def forward(ctx, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor, margin: float) -> torch.Tensor:  # noqa: D102
        hinge = torch.sub(pos, neg).neg_().add_(margin).relu_()
        weight = valid.to(hinge.dtype)
        count = weight.sum().clamp_(min=1.0)
        active = hinge > 0
        total = hinge.mul_(weight).sum()
        ctx.save_for_backward(weight, active, count)
        return total / count

    @staticmethod
    def backward(ctx, *grad_outputs: torch.Tensor):  # noqa: D102
        weight, active, count = ctx.saved_tensors
        grad_pos = (grad_outputs[0] / count * weight).masked_fill_(~active, 0.0).neg_()
        needs_pos, needs_neg = ctx.needs_input_grad[:2]
        return (grad_pos if needs_pos else None), (grad_pos.neg() if needs_neg else None), None, None


def _hinge_mean(pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor, margin: float) -> torch.Tensor:
    if pos.dtype != neg.dtype or pos.shape != neg.shape or pos.shape != valid.shape:
        return _masked_mean(F.relu(margin - (pos - neg)), valid)
    return _HingeMean.apply(pos, neg, valid, float(margin))


def ranking_loss_terms(
    list_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    *,
    margin: float = 0.5,
    list_valid: torch.Tensor | None = None,
    neg_valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of Yue et al.'s loss (module docstring): ``(pair_term, negative_term)``.

    ``list_scores [P, k]``: student scores of each list in the black box's order;
    ``neg_scores [P, q]``: scores of the sampled negatives (``q = 0`` gives a zero second term);
    ``list_valid`` / ``neg_valid``: bool masks of the same shapes (default: all valid).
    """
    if list_scores.ndim != 2 or neg_scores.ndim != 2 or neg_scores.shape[0] != list_scores.shape[0]:
        raise ConfigError(
            f"ranking loss needs list_scores [P, k] and neg_scores [P, q], got {tuple(list_scores.shape)} and {tuple(neg_scores.shape)}"
        )
    if list_valid is None:
        list_valid = torch.ones_like(list_scores, dtype=torch.bool)
    if neg_valid is None:
        neg_valid = torch.ones_like(neg_scores, dtype=torch.bool)
    pair_term = _hinge_mean(list_scores[:, :-1], list_scores[:, 1:], list_valid[:, :-1] & list_valid[:, 1:], margin)
    k, q = list_scores.shape[1], neg_scores.shape[1]
    if q == 0 or k == 0:
        return pair_term, list_scores.sum() * 0.0
    if k == q:  # pair p is list item p and negative p: no re-indexing
        pos, neg, valid = list_scores, neg_scores, list_valid & neg_valid
    else:
        idx = torch.arange(max(k, q), device=list_scores.device)
        pos, neg, valid = list_scores[:, idx % k], neg_scores[:, idx % q], list_valid[:, idx % k] & neg_valid[:, idx % q]
    return pair_term, _hinge_mean(pos, neg, valid, margin)


def ranking_loss(
    scores: torch.Tensor,
    lists: torch.Tensor,
    negatives: torch.Tensor,
    margin: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Yue et al.'s loss from full-catalogue student scores ``[P, N]``, black-box ``lists [P, k]``
    and ``negatives [P, q]`` (ids; ``-1`` = padding/masked). Returns ``(loss, terms)``."""
    lists, negatives = lists.long(), negatives.long()
    list_scores = scores.gather(1, lists.clamp(min=0))
    neg_scores = scores.gather(1, negatives.clamp(min=0))
    return ranking_loss_scored(list_scores, neg_scores, lists, negatives, margin)


def scored_items(lists: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """``int64 [P, k + q]``: the items :func:`ranking_loss_scored` needs scores of, lists first
    (padding ``-1`` read as item 0: its score is masked out)."""
    return torch.cat([lists.long(), negatives.long()], dim=1).clamp_(min=0)


def ranking_loss_scored(
    list_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    lists: torch.Tensor,
    negatives: torch.Tensor,
    margin: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`ranking_loss` from the student's scores of the listed items ``[P, k]`` and of the
    negatives ``[P, q]`` only (e.g. :meth:`~raysteal.models.sequence_layers.SequentialRecommender.scores_at`
    of :func:`scored_items`), without the rest of the catalogue: the same loss and gradients."""
    pair_term, negative_term = ranking_loss_terms(list_scores, neg_scores, margin=margin, list_valid=lists >= 0, neg_valid=negatives >= 0)
    return pair_term + negative_term, {"rank_pairs": pair_term.detach(), "rank_negatives": negative_term.detach()}
