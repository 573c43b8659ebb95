"""Accuracy of a model on held-out items, per user: full-catalogue and sampled ranking.

Scores are ``float [B, N]`` over the whole catalogue; ``exclude`` (items a user has already
seen) is a bool mask ``[B, N]`` or a CSR pair ``(indptr, indices)`` for the batch's rows
(``indptr`` has ``B + 1`` entries and may be a slice of a larger pointer array; use
:func:`csr_select` to cut arbitrary users out of a log). Per-user values come back as numpy when
no argument was a torch tensor, else as tensors on the scores' device.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import torch

from raysteal.errors import ConfigError
from raysteal.metrics.arrays import (
    ArrayLike,
    ItemSets,
    any_torch,
    as_lists,
    as_tensor,
    check_k,
    device_of,
    exclusion_mask,
    finish,
    first_occurrence,
    isin_rows,
    same_rows,
    set_overlap,
)


def _scores(scores: object, dev: torch.device) -> torch.Tensor:
    s = as_tensor(scores, "scores", dev)
    if s.ndim != 2 or not s.dtype.is_floating_point:
        raise ConfigError(f"scores must be a float [B, N] array, got {s.dtype} of shape {tuple(s.shape)}")
    return s


def _targets(targets: object, rows: int, num_items: int, dev: torch.device) -> torch.Tensor:
    t = as_tensor(targets, "targets", dev, torch.int64).reshape(-1)
    if t.numel() != rows:
        raise ConfigError(f"targets: expected one item per row ({rows}), got {t.numel()}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_items):
        raise ConfigError(
            f"targets must be item ids in [0, {num_items}); drop users without a held-out item "
            "(e.g. LeaveOneOut.evaluable_users) before ranking"
        )
    return t


def csr_select(indptr: ArrayLike, indices: ArrayLike, rows: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The sub-CSR ``(indptr', indices')`` of the given ``rows`` (in that order), vectorised.

    E.g. ``csr_select(log.indptr, log.items, users)`` gives the seen items of a batch of users,
    ready for ``exclude=``.
    """
    ptr = np.asarray(indptr, dtype=np.int64)
    idx = np.asarray(indices)
    sel = np.asarray(rows, dtype=np.int64).reshape(-1)
    if sel.size and (sel.min() < 0 or sel.max() >= ptr.size - 1):
        raise ConfigError(f"csr_select: rows must lie in [0, {ptr.size - 1})")
    starts, counts = ptr[sel], ptr[sel + 1] - ptr[sel]
    new_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    gather = np.repeat(starts - new_ptr[:-1], counts) + np.arange(new_ptr[-1], dtype=np.int64)
    return new_ptr, idx[gather].astype(np.int64, copy=False)


def ranked_top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, k)`` with ties in a fixed order: among equal scores the lowest item id
    ranks first, so the top-``k`` is the first ``k`` of any longer top list. ``torch.topk``
    leaves that order to the kernel; rows whose top ``k + 1`` scores hold a tie (rare for a
    trained model's scores, common for counts) are ranked by a stable sort instead."""
    width = min(k + 1, scores.shape[1])
    values, items = torch.topk(scores, width, dim=1)
    tied = (values[:, 1:] == values[:, :-1]).any(1) if width > 1 else torch.zeros(len(scores), dtype=torch.bool)
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        order = torch.sort(scores[rows], dim=1, descending=True, stable=True).indices[:, :width]
        items[rows] = order
        values[rows] = scores[rows].gather(1, order)
    return values[:, :k], items[:, :k]


@overload
def topk_items(scores: torch.Tensor, k: int, exclude: ItemSets | None = None) -> torch.Tensor: ...
@overload
def topk_items(scores: np.ndarray, k: int, exclude: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray: ...
@overload
def topk_items(scores: ArrayLike, k: int, exclude: ItemSets | None = None) -> ArrayLike: ...
def topk_items(scores: ArrayLike, k: int, exclude: ItemSets | None = None) -> ArrayLike:
    """The ``k`` best-scored items per row, best first: ``int64 [B, k]``.

    Excluded items (and items scored ``-inf``) are never returned; a row left with fewer than
    ``k`` candidates is padded with ``-1`` at the end. ``k`` must lie in ``[1, N]``. Among equal
    scores the lowest item id ranks first (:func:`ranked_top`).
    """
    dev = device_of(scores)
    s = _scores(scores, dev)
    check_k(k)
    if k > s.shape[1]:
        raise ConfigError(f"k={k} exceeds the {s.shape[1]} candidate items")
    mask = exclusion_mask(exclude, s.shape[0], s.shape[1], dev)
    if mask is not None:
        s = s.masked_fill(mask, -math.inf)
    values, items = ranked_top(s, k)
    items = torch.where(values == -math.inf, torch.full_like(items, -1), items)
    return finish(items, not any_torch(scores, exclude))


def rank_of_target(scores: ArrayLike, targets: ArrayLike, exclude: ItemSets | None = None) -> ArrayLike:
    """0-based rank of each row's target among all non-excluded items (full ranking), ``int64 [B]``.

    Ties count **against** the target (pessimistic): ``rank = #{j ≠ target not excluded :
    score_j ≥ score_target}``, so a model that scores every item alike ranks each target last
    and can never look better than it is. The target itself is never excluded (a re-consumed
    item may sit in the seen set). A ``NaN`` target score ranks last.
    """
    dev = device_of(scores, targets)
    s = _scores(scores, dev)
    rows, n = s.shape
    t = _targets(targets, rows, n, dev)
    candidates = torch.ones(rows, n, dtype=torch.bool, device=dev)
    mask = exclusion_mask(exclude, rows, n, dev)
    if mask is not None:
        candidates = ~mask
    arange = torch.arange(rows, device=dev)
    candidates[arange, t] = False  # the target is counted separately
    target_score = s[arange, t]
    rank = ((s >= target_score[:, None]) & candidates).sum(1)
    rank = torch.where(torch.isnan(target_score), candidates.sum(1), rank)
    return finish(rank, not any_torch(scores, targets, exclude))


def sampled_rank_of_target(scores: ArrayLike, targets: ArrayLike, negatives: ArrayLike) -> ArrayLike:
    """0-based rank of the target among itself and its sampled ``negatives [B, n]``, ``int64 [B]``.

    The sampled protocol of He et al. (2017) and Kang & McAuley (2018): rank the held-out item
    against ``n`` (usually 100) sampled unseen items. Ties count against the target; negative
    ids (padding) and negatives equal to the target are ignored. A ``NaN`` target score ranks last.
    """
    dev = device_of(scores, targets, negatives)
    s = _scores(scores, dev)
    rows, n = s.shape
    t = _targets(targets, rows, n, dev)
    neg = as_lists(negatives, "negatives", dev)
    same_rows(s, neg, ("scores", "negatives"))
    if bool((neg >= n).any()):
        raise ConfigError(f"negatives hold item ids >= the {n} scored items")
    counted = (neg >= 0) & (neg != t[:, None])
    target_score = s[torch.arange(rows, device=dev), t]
    neg_score = torch.gather(s, 1, neg.clamp(min=0))
    rank = ((neg_score >= target_score[:, None]) & counted).sum(1)
    rank = torch.where(torch.isnan(target_score), counted.sum(1), rank)
    return finish(rank, not any_torch(scores, targets, negatives))


def _seen_keys(seen_indptr: ArrayLike, seen_indices: ArrayLike, users: np.ndarray, num_items: int) -> np.ndarray:
    """Sorted unique keys ``row * num_items + item`` of the batch rows' seen items."""
    ptr, items = csr_select(seen_indptr, seen_indices, users)
    if items.size and (items.min() < 0 or items.max() >= num_items):
        raise ConfigError(f"seen_indices: item ids must lie in [0, {num_items})")
    row = np.repeat(np.arange(users.size, dtype=np.int64), np.diff(ptr))
    keys = np.sort(row * num_items + items)  # sort + dedupe: numpy 2's hash-based unique is far slower here
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys


def _is_seen(keys: np.ndarray, cand_keys: np.ndarray) -> np.ndarray:
    if keys.size == 0:
        return np.zeros(cand_keys.shape, dtype=bool)
    pos = np.searchsorted(keys, cand_keys).clip(max=keys.size - 1)
    return keys[pos] == cand_keys


def _row_duplicates(out: np.ndarray) -> np.ndarray:
    """Bool mask of entries repeating an earlier entry of the same row."""
    order = np.argsort(out, axis=1, kind="stable")
    vals = np.take_along_axis(out, order, axis=1)
    dup_sorted = np.zeros(out.shape, dtype=bool)
    dup_sorted[:, 1:] = vals[:, 1:] == vals[:, :-1]
    dup = np.zeros(out.shape, dtype=bool)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup


def _negative_weights(num_items: int, popularity: ArrayLike | None) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """``(weights, cdf, eligible)`` of the negatives' distribution: uniform (no weights, no cdf,
    every item eligible), or ∝ ``popularity`` (items of weight 0 never drawn)."""
    if popularity is None:
        return None, None, np.ones(num_items, dtype=bool)
    weights = np.asarray(popularity, dtype=np.float64).reshape(-1)
    if weights.size != num_items or not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.sum() <= 0:
        raise ConfigError(f"popularity must hold {num_items} finite non-negative weights, not all zero")
    return weights, np.cumsum(weights) / weights.sum(), weights > 0


def sample_negatives(
    num_items: int,
    seen_indptr: ArrayLike,
    seen_indices: ArrayLike,
    users: ArrayLike,
    n: int = 100,
    generator: np.random.Generator | None = None,
    popularity: ArrayLike | None = None,
    replace: bool = True,
    max_rounds: int = 64,
) -> np.ndarray:
    """``n`` negatives per user, ``int64 [B, n]``, none in that user's seen set.

    ``seen_indptr`` / ``seen_indices`` are a CSR log over all users (e.g. ``log.indptr``,
    ``log.items`` of the *full* log, so held-out items are excluded too) and ``users`` the batch's
    user ids. Uniform over unseen items by default, or ∝ ``popularity[item]`` (non-negative
    weights ``[num_items]``; zero-weight items are never drawn). ``replace=True`` (default) draws
    each negative independently, as the reference code of Kang & McAuley (2018) does;
    ``replace=False`` makes a row's negatives distinct.

    Vectorised rejection sampling: every rejected draw (seen, or a repeat when ``replace=False``)
    is redrawn at once, for at most ``max_rounds`` rounds; the few rows still incomplete after
    that (users who have seen nearly all the eligible mass) are finished exactly from their
    unseen complement. ``generator`` is required (explicit randomness).
    """
    if not isinstance(generator, np.random.Generator):
        raise ConfigError("sample_negatives: pass a numpy Generator, e.g. np.random.default_rng(seed)")
    check_k(n, "n")
    check_k(num_items, "num_items")
    user_ids = np.asarray(users, dtype=np.int64).reshape(-1)
    rows = user_ids.size
    keys = _seen_keys(seen_indptr, seen_indices, user_ids, num_items)
    seen_rows, seen_items = np.divmod(keys, num_items)
    weights, cdf, eligible = _negative_weights(num_items, popularity)
    available = int(eligible.sum()) - np.bincount(seen_rows, weights=eligible[seen_items], minlength=rows)
    need = 1 if replace else n
    short = np.flatnonzero(available < need)
    if short.size:
        raise ConfigError(
            f"sample_negatives: user {int(user_ids[short[0]])} has {int(available[short[0]])} eligible unseen items, needs {need}"
        )

    def draw(count: int) -> np.ndarray:
        if cdf is None:
            return generator.integers(0, num_items, size=count, dtype=np.int64)
        return np.searchsorted(cdf, generator.random(count), side="right").clip(max=num_items - 1)

    out = draw(rows * n).reshape(rows, n)
    flat = out.reshape(-1)
    flat_row = np.repeat(np.arange(rows, dtype=np.int64), n)

    def rejected(pos: np.ndarray) -> np.ndarray:
        """Flat positions among ``pos`` whose draw is seen or ineligible (zero weight)."""
        item = flat[pos]
        bad = _is_seen(keys, flat_row[pos] * num_items + item) | ~eligible[item]
        return pos[bad]

    bad = rejected(np.arange(rows * n, dtype=np.int64))
    if not replace:
        bad = np.union1d(bad, np.flatnonzero(_row_duplicates(out).reshape(-1)))
    for _ in range(max_rounds):
        if bad.size == 0:
            return out
        flat[bad] = draw(bad.size)
        redrawn = bad
        bad = rejected(redrawn)
        if not replace:
            touched = np.unique(flat_row[redrawn])
            dup_r, dup_c = np.nonzero(_row_duplicates(out[touched]))
            bad = np.union1d(bad, touched[dup_r] * n + dup_c)
    for row in np.unique(flat_row[bad]):  # rare: users whose eligible unseen mass is tiny
        cols = bad[flat_row[bad] == row] - row * n
        _finish_row(out[row], cols, seen_items[seen_rows == row], eligible, weights, replace, generator)
    return out


def _finish_row(
    row: np.ndarray,
    cols: np.ndarray,
    seen: np.ndarray,
    eligible: np.ndarray,
    weights: np.ndarray | None,
    replace: bool,
    generator: np.random.Generator,
) -> None:
    """Redraw ``row[cols]`` in place exactly from the row's unseen eligible items."""
    keep = np.ones(row.size, dtype=bool)
    keep[cols] = False
    pool = np.flatnonzero(eligible)
    pool = pool[~np.isin(pool, seen)]
    if not replace:
        pool = pool[~np.isin(pool, row[keep])]
    prob = None if weights is None else weights[pool] / weights[pool].sum()
    row[cols] = generator.choice(pool, size=cols.size, replace=replace, p=prob)


def _rank(rank: object, dev: torch.device) -> torch.Tensor:
    r = as_tensor(rank, "rank", dev, torch.int64).reshape(-1)
    if r.numel() and int(r.min()) < 0:
        raise ConfigError("rank must hold 0-based ranks (>= 0)")
    return r


def hit_rate_at_k(rank: ArrayLike, k: int) -> ArrayLike:
    """HR@K for one held-out item per user: 1 if its 0-based ``rank < k``, else 0 (``float64 [B]``)."""
    check_k(k)
    r = _rank(rank, device_of(rank))
    return finish((r < k).to(torch.float64), not any_torch(rank))


def ndcg_at_k(rank: ArrayLike, k: int) -> ArrayLike:
    """NDCG@K for one held-out item per user: ``1 / log2(rank + 2)`` if ``rank < k``, else 0.

    (The ideal DCG of a single relevant item is 1, so DCG is NDCG; Kang & McAuley 2018.)
    """
    check_k(k)
    r = _rank(rank, device_of(rank))
    gain = 1.0 / torch.log2(r.to(torch.float64) + 2.0)
    return finish(torch.where(r < k, gain, torch.zeros_like(gain)), not any_torch(rank))


def _relevant(relevant: object, rows: int, dev: torch.device) -> torch.Tensor:
    """Relevant items as a padded ``int64 [B, M]`` matrix (from a matrix or a CSR pair)."""
    if isinstance(relevant, tuple):
        if len(relevant) != 2:
            raise ConfigError("relevant: a CSR relevant set is the pair (indptr, indices)")
        ptr = as_tensor(relevant[0], "relevant indptr", dev, torch.int64)
        idx = as_tensor(relevant[1], "relevant indices", dev, torch.int64)
        if ptr.ndim != 1 or ptr.numel() != rows + 1:
            raise ConfigError(f"relevant: indptr must have {rows + 1} entries, got {ptr.numel()}")
        counts = ptr[1:] - ptr[:-1]
        if bool((counts < 0).any()) or int(ptr[0]) < 0 or int(ptr[-1]) > idx.numel():
            raise ConfigError("relevant: indptr must be non-decreasing and within indices")
        width = int(counts.max()) if rows else 0
        row = torch.repeat_interleave(torch.arange(rows, device=dev), counts)
        col = torch.arange(int(ptr[-1] - ptr[0]), device=dev) - torch.repeat_interleave(ptr[:-1] - ptr[0], counts)
        out = torch.full((rows, width), -1, dtype=torch.int64, device=dev)
        out[row, col] = idx[int(ptr[0]) : int(ptr[-1])]
        return out
    out = as_tensor(relevant, "relevant", dev)
    if out.ndim == 1:
        out = out[:, None]
    return as_lists(out, "relevant", dev)


def _sets_inputs(ranked_lists: object, relevant: object, k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    dev = device_of(ranked_lists, *(relevant if isinstance(relevant, tuple) else (relevant,)))
    lists = as_lists(ranked_lists, "ranked_lists", dev, k)
    rel = _relevant(relevant, lists.shape[0], dev)
    same_rows(lists, rel, ("ranked_lists", "relevant"))
    return lists, rel


def _torch_in(ranked_lists: object, relevant: object) -> bool:
    return any_torch(ranked_lists, *(relevant if isinstance(relevant, tuple) else (relevant,)))


def recall_at_k(ranked_lists: ArrayLike, relevant: ItemSets, k: int | None = None) -> ArrayLike:
    """Recall@K with several relevant items per user: ``|top-K ∩ relevant| / |relevant|``
    (the Recall of Zhu et al. Fig. 8; Gunawardana & Shani 2009), ``float64 [B]``.

    ``relevant`` is a padded ``int [B, M]`` matrix (``-1`` padding; a 1-d array means one item
    per user) or a CSR pair ``(indptr, indices)`` for the batch's rows. Repeated relevant items
    count once; a user without relevant items is ``NaN``.
    """
    lists, rel = _sets_inputs(ranked_lists, relevant, k)
    hits, size, _ = set_overlap(rel, lists)
    value = torch.where(size == 0, torch.full_like(size, math.nan), hits / size.clamp(min=1))
    return finish(value, not _torch_in(ranked_lists, relevant))


def ndcg_at_k_sets(ranked_lists: ArrayLike, relevant: ItemSets, k: int | None = None) -> ArrayLike:
    """NDCG@K with binary relevance and several relevant items per user, ``float64 [B]``.

    ``DCG = Σ_{i<K, list_i relevant} 1/log2(i+2)`` (a repeated list item gains once) over
    ``IDCG = Σ_{i < min(|relevant|, K)} 1/log2(i+2)``. Inputs as :func:`recall_at_k`;
    ``NaN`` for a user without relevant items.
    """
    lists, rel = _sets_inputs(ranked_lists, relevant, k)
    width = lists.shape[1]
    discount = 1.0 / torch.log2(torch.arange(width, device=lists.device, dtype=torch.float64) + 2.0)
    gained = isin_rows(lists, rel) & first_occurrence(lists)
    dcg = (gained.to(torch.float64) * discount).sum(1)
    size = first_occurrence(rel).sum(1)
    ideal_cum = torch.cat([torch.zeros(1, dtype=torch.float64, device=lists.device), discount.cumsum(0)])
    idcg = ideal_cum[size.clamp(max=width)]
    value = torch.where(size == 0, torch.full_like(dcg, math.nan), dcg / idcg.clamp(min=1e-300))
    return finish(value, not _torch_in(ranked_lists, relevant))
