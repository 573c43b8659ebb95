"""Fidelity of a clone to its target, per user: how alike their ranked lists are.

Every function takes ranked lists ``int64 [B, K]`` (best first; negative ids, conventionally
``-1``, pad shorter lists and never match anything) as numpy arrays or torch tensors and returns
one ``float64`` value per row — numpy when no argument was a tensor, else a tensor on the
inputs' device. Rows where the metric is undefined (an empty target list) are ``NaN``; the
means in :mod:`raysteal.metrics.summary` skip them. Lists are sets of distinct items: a repeated
id counts once.
"""

from __future__ import annotations

import math

import torch

from raysteal.errors import ConfigError
from raysteal.metrics.arrays import (
    ArrayLike,
    any_torch,
    as_lists,
    as_tensor,
    check_k,
    device_of,
    finish,
    first_occurrence,
    position_in,
    same_rows,
    set_overlap,
)

_NAMES = ("target_lists", "clone_lists")


def _pair(a: object, b: object, k: int | None, names: tuple[str, str] = _NAMES) -> tuple[torch.Tensor, torch.Tensor]:
    dev = device_of(a, b)
    ta, tb = as_lists(a, names[0], dev, k), as_lists(b, names[1], dev, k)
    same_rows(ta, tb, names)
    return ta, tb


def _nan_where(values: torch.Tensor, undefined: torch.Tensor) -> torch.Tensor:
    return torch.where(undefined, torch.full_like(values, math.nan), values)


def _overlap(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(|A ∩ B|, |A|) per row, counting distinct valid ids."""
    inter, size_a, _ = set_overlap(a, b)
    return inter, size_a


def agreement_at_k(target_lists: ArrayLike, clone_lists: ArrayLike, k: int | None = None) -> ArrayLike:
    """Agreement of Zhu et al. (Eq. 3): ``Agr = |R_t ∩ R_c| / |R_t|`` per user.

    ``R_t`` / ``R_c`` are the target's and the clone's lists, both truncated to their first ``k``
    entries when ``k`` is given (``k`` may not exceed either list's width). A padded target list
    divides by its number of valid items; an empty one gives ``NaN``.
    """
    t, c = _pair(target_lists, clone_lists, k)
    hits, size = _overlap(t, c)
    return finish(_nan_where(hits / size.clamp(min=1), size == 0), not any_torch(target_lists, clone_lists))


def agreement_at(target_lists: ArrayLike, clone_lists: ArrayLike, k: int = 10) -> ArrayLike:
    """Agr@K of Yue et al. (2021): ``|top-K(target) ∩ top-K(clone)| / K`` per user.

    Identical to :func:`agreement_at_k` whenever the target list holds ``K`` valid items; a
    shorter (padded) target list still divides by ``K``. ``NaN`` for an empty target list.
    """
    check_k(k)
    t, c = _pair(target_lists, clone_lists, k)
    hits, size = _overlap(t, c)
    return finish(_nan_where(hits / float(k), size == 0), not any_torch(target_lists, clone_lists))


def top1_agreement(target_lists: ArrayLike, clone_lists: ArrayLike) -> ArrayLike:
    """Agr@1 of Yue et al.: 1 where the clone's top item equals the target's, else 0 (per user)."""
    return agreement_at(target_lists, clone_lists, k=1)


def exact_match_at_k(target_lists: ArrayLike, clone_lists: ArrayLike, k: int | None = None) -> ArrayLike:
    """1 where the two top-K lists are identical item for item, in order, else 0 (per user).

    Padding compares equal to padding (two lists of the same 3 items, both padded to 5, are the
    same list), but a row whose target list is empty is ``NaN``, never a match.
    """
    t, c = _pair(target_lists, clone_lists, k)
    if t.shape[1] != c.shape[1]:
        raise ConfigError(f"exact match needs lists of one width; got {t.shape[1]} and {c.shape[1]} (pass k)")
    pad = torch.full_like(t, -1)
    same = (torch.where(t < 0, pad, t) == torch.where(c < 0, pad, c)).all(1).to(torch.float64)
    return finish(_nan_where(same, (t < 0).all(1)), not any_torch(target_lists, clone_lists))


def jaccard_at_k(a: ArrayLike, b: ArrayLike, k: int | None = None) -> ArrayLike:
    """Jaccard similarity ``|A ∩ B| / |A ∪ B|`` of the two lists' item sets (top-``k``), per row.

    ``NaN`` where both lists are empty.
    """
    ta, tb = _pair(a, b, k, ("a", "b"))
    inter, size_a, size_b = set_overlap(ta, tb)
    union = size_a + size_b - inter
    return finish(_nan_where(inter / union.clamp(min=1), union == 0), not any_torch(a, b))


def rank_biased_overlap(a: ArrayLike, b: ArrayLike, p: float = 0.9, k: int | None = None) -> ArrayLike:
    """Extrapolated rank-biased overlap ``RBO_ext`` (Webber, Moffat & Zobel 2010), per row.

    With ``X_d`` the number of items the two lists share within their first ``d`` entries and
    ``s ≤ l`` the two lists' lengths (valid entries; padding must trail), this is the paper's
    Eq. 30 for lists of uneven length::

        RBO_ext = (1-p)/p · [ Σ_{d=1..l} X_d/d · p^d + Σ_{d=s+1..l} X_s·(d-s)/(s·d) · p^d ]
                  + [ (X_l - X_s)/l + X_s/s ] · p^l

    where for ``d > s`` the shorter list counts with all its ``s`` items. For two full lists of
    equal depth ``k`` it reduces to ``X_k/k · p^k + (1-p)/p · Σ_{d=1..k} X_d/d · p^d``; identical
    lists score 1, disjoint ones 0. One list empty gives 0, both empty ``NaN``. ``0 < p < 1``.
    """
    if not 0.0 < float(p) < 1.0:
        raise ConfigError(f"rank_biased_overlap: p must lie strictly between 0 and 1, got {p!r}")
    ta, tb = _pair(a, b, k, ("a", "b"))
    width = max(ta.shape[1], tb.shape[1])
    if width == 0:
        raise ConfigError("rank_biased_overlap: lists have no columns")
    ta = torch.nn.functional.pad(ta, (0, width - ta.shape[1]), value=-1)
    tb = torch.nn.functional.pad(tb, (0, width - tb.shape[1]), value=-1)
    for name, t in (("a", ta), ("b", tb)):
        valid = t >= 0
        if bool((valid[:, 1:] & ~valid[:, :-1]).any()):
            raise ConfigError(f"rank_biased_overlap: padding in {name} must trail the valid items")
    rows = ta.shape[0]
    # Item a[i] (first occurrence) is shared from depth max(i, pos_b) + 1 on (1-based depths).
    pos = torch.arange(width, device=ta.device).expand(rows, width)
    first = torch.maximum(pos, position_in(ta, tb)) + 1  # width + 1 when absent from b
    first = torch.where(first_occurrence(ta), first, torch.full_like(first, width + 1))
    counts = torch.zeros(rows, width + 2, dtype=torch.float64, device=ta.device)
    counts.scatter_add_(1, first, torch.ones_like(first, dtype=torch.float64))
    overlap = counts.cumsum(1)[:, : width + 1]  # overlap[:, d] = X_d, d = 0..width

    len_a, len_b = (ta >= 0).sum(1), (tb >= 0).sum(1)
    s, long = torch.minimum(len_a, len_b), torch.maximum(len_a, len_b)
    depth = torch.arange(1, width + 1, device=ta.device, dtype=torch.float64)
    weight = torch.pow(torch.tensor(float(p), dtype=torch.float64, device=ta.device), depth)
    x_s = overlap.gather(1, s[:, None]).squeeze(1)
    x_l = overlap.gather(1, long[:, None]).squeeze(1)
    s_f, l_f = s.to(torch.float64).clamp(min=1)[:, None], long.to(torch.float64).clamp(min=1)
    upto_l = depth[None, :] <= long[:, None]
    beyond_s = upto_l & (depth[None, :] > s[:, None])
    term1 = torch.where(upto_l, overlap[:, 1:] / depth * weight, 0.0).sum(1)
    term2 = torch.where(beyond_s, x_s[:, None] * (depth - s_f) / (s_f * depth) * weight, 0.0).sum(1)
    tail = ((x_l - x_s) / l_f + x_s / s_f.squeeze(1)) * torch.pow(torch.full_like(l_f, float(p)), l_f)
    rbo = (1.0 - p) / p * (term1 + term2) + tail
    rbo = torch.where(s == 0, torch.zeros_like(rbo), rbo)
    return finish(_nan_where(rbo, long == 0), not any_torch(a, b))


def list_kl(
    target_lists: ArrayLike,
    clone: ArrayLike,
    k: int | None = None,
    temperature: float = 1.0,
    clone_temperature: float | None = None,
) -> ArrayLike:
    """KL divergence ``KL(p_T ‖ q_C)`` over the target's top-K list, per user ("KL on the list",
    Yue et al. 2021; the rank-derived soft target of the BAHSD design).

    * ``p_T(j) ∝ exp(-rank_j / temperature)`` over the target's valid top-K items, ``rank_j``
      the 0-based position of ``j`` in the target list.
    * ``clone`` as **scores** (float ``[B, N]``, full catalogue): ``q_C`` is the softmax of
      ``scores / clone_temperature`` restricted to those same items.
    * ``clone`` as **ranked lists** (int ``[B, K']``): ``q_C(j) ∝ exp(-rank'_j / clone_temperature)``
      with ``rank'_j`` the item's 0-based position in the clone list, or ``K'`` (the first rank
      past the list) when the clone did not list it — the kindest rank a top-``K'`` answer allows.

    ``clone_temperature`` defaults to ``temperature``. Both distributions live on the target's
    items only, so the value is ≥ 0 and finite (``inf`` only if the clone scores a target item
    ``-inf``); it is 0 iff ``q_C = p_T`` — for lists with equal temperatures, iff the clone puts
    the target's items at the target's positions. ``NaN`` for an empty target list.
    """
    for name, tau in (("temperature", temperature), ("clone_temperature", clone_temperature)):
        if tau is not None and not float(tau) > 0.0:
            raise ConfigError(f"list_kl: {name} must be > 0, got {tau!r}")
    tau_q = float(temperature if clone_temperature is None else clone_temperature)
    dev = device_of(target_lists, clone)
    t = as_lists(target_lists, "target_lists", dev, k)
    c = as_tensor(clone, "clone", dev)
    same_rows(t, c, ("target_lists", "clone"))
    keep = first_occurrence(t)
    rank = torch.arange(t.shape[1], device=dev, dtype=torch.float64).expand_as(t)
    if c.dtype.is_floating_point:
        if c.ndim != 2:
            raise ConfigError(f"clone scores must be 2-d [B, N], got shape {tuple(c.shape)}")
        if bool((t >= c.shape[1]).any()):
            raise ConfigError(f"target_lists hold item ids >= the {c.shape[1]} scored items")
        logit_q = torch.gather(c, 1, t.clamp(min=0)).to(torch.float64) / tau_q
    else:
        c = as_lists(c, "clone", dev)
        logit_q = -position_in(t, c).to(torch.float64) / tau_q
    neg_inf = torch.full_like(rank, -math.inf)
    log_p = torch.log_softmax(torch.where(keep, -rank / float(temperature), neg_inf), dim=1)
    log_q = torch.log_softmax(torch.where(keep, logit_q, neg_inf), dim=1)
    terms = torch.where(keep, log_p.exp() * (log_p - log_q), torch.zeros_like(rank))
    return finish(_nan_where(terms.sum(1), ~keep.any(1)), not any_torch(target_lists, clone))
