"""Measuring a sequential student against its teacher (Yue et al. 2021 §4; BAHSD's head/tail).

* :func:`student_lists` — the student's top-k for real sequences, the input's items excluded
  exactly as the oracle excludes them.
* :func:`extraction_metrics` — Agr@1 / Agr@10 (Yue et al.: top-1 equality and
  ``|top10_s ∩ top10_t| / 10``), NDCG agreement, each overall and for head / tail users, and the
  student's and teacher's own accuracy on held-out next items when given.
* :func:`ndcg_agreement` — NDCG@K of the student's list with the teacher's top-K as **graded**
  relevance: the teacher's item at 0-based rank ``r`` has relevance ``K − r``; the ideal DCG is
  the teacher's own list, so 1 means the same items in the same order and, unlike Agr@K, order
  matters.
* :func:`next_item_metrics` — full-ranking HR@K / NDCG@K of ranked lists on held-out items.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from raysteal.errors import ConfigError
from raysteal.metrics import agreement_at, hit_rate_at_k, list_kl, mean, ndcg_at_k, top1_agreement
from raysteal.metrics.ranking import ranked_top
from raysteal.models.base import PAD
from raysteal.training.trainer import resolve_device


@torch.no_grad()
def student_lists(student, sequences: np.ndarray, k: int, device: str = "cpu", chunk: int = 1024) -> np.ndarray:
    """``int64 [U, k]``: the student's ranked top-``k`` for left-padded ``sequences [U, L]``, every
    item present in a row excluded (as the oracle does). The student is moved to ``device``."""
    seqs = np.asarray(sequences)
    if seqs.ndim != 2 or not np.issubdtype(seqs.dtype, np.integer):
        raise ConfigError(f"sequences must be an integer array [U, L], got {seqs.dtype} of shape {seqs.shape}")
    if not 1 <= k <= student.num_items:
        raise ConfigError(f"k must lie in [1, {student.num_items}], got {k}")
    if chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    dev = resolve_device(device)
    student.eval().to(dev)
    out = np.empty((len(seqs), k), dtype=np.int64)
    for lo in range(0, len(seqs), chunk):
        x = torch.as_tensor(seqs[lo : lo + chunk], dtype=torch.int64, device=dev)
        scores = student.score(x).float()
        valid = x != PAD
        rows = torch.arange(len(x), device=dev)[:, None].expand_as(x)[valid]
        scores[rows, x[valid]] = -math.inf
        values, items = ranked_top(scores, k)  # equal scores: the lowest item id first
        out[lo : lo + len(x)] = torch.where(values == -math.inf, torch.full_like(items, -1), items).cpu().numpy()
    return out


def _lists(x: object, name: str, k: int) -> np.ndarray:
    arr = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    if arr.ndim != 2 or arr.shape[1] < k:
        raise ConfigError(f"{name} must be ranked lists [U, >= {k}], got shape {arr.shape}")
    return arr[:, :k].astype(np.int64, copy=False)


def ndcg_agreement(student: np.ndarray, teacher: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-user NDCG@K of ``student`` lists against the ``teacher``'s top-K as graded relevance
    (``K − rank``, module docstring). ``NaN`` for an empty teacher list."""
    s, t = _lists(student, "student lists", k), _lists(teacher, "teacher lists", k)
    if len(s) != len(t):
        raise ConfigError(f"student and teacher lists need the same users: {len(s)} vs {len(t)}")
    relevance = (k - np.arange(k, dtype=np.float64))[None, None, :]
    match = (s[:, :, None] == t[:, None, :]) & (t[:, None, :] >= 0) & (s[:, :, None] >= 0)
    discount = 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)
    dcg = ((match * relevance).sum(-1) * discount).sum(-1)
    valid = (t >= 0).sum(1)
    ideal = np.cumsum((k - np.arange(k)) * discount)  # ideal[n - 1]: teacher list of n valid items
    idcg = np.where(valid > 0, ideal[np.maximum(valid, 1) - 1], np.nan)
    return dcg / idcg


def next_item_metrics(lists: np.ndarray, test_items: np.ndarray, k: int = 10) -> dict[str, float]:
    """``{"hr@K", "ndcg@K"}`` of full-ranking lists on one held-out item per user (rank = its
    position in the list, a miss past ``K``). Users whose test item is negative are skipped."""
    arr = _lists(lists, "lists", k)
    target = np.asarray(test_items, dtype=np.int64).reshape(-1)
    if len(target) != len(arr):
        raise ConfigError(f"test_items: expected one item per user ({len(arr)}), got {len(target)}")
    hit = arr == target[:, None]
    rank = np.where(hit.any(1), hit.argmax(1), k)
    known = target >= 0
    hr = np.where(known, hit_rate_at_k(rank, k), np.nan)
    ndcg = np.where(known, ndcg_at_k(rank, k), np.nan)
    return {f"hr@{k}": mean(hr), f"ndcg@{k}": mean(ndcg)}


def extraction_metrics(
    student_lists: np.ndarray,
    teacher_lists: np.ndarray,
    *,
    head: np.ndarray,
    test_items: np.ndarray | None = None,
) -> dict[str, float]:
    """Agreement of the student with the teacher on the same users (rows), overall and by group.

    Keys: ``agr@1``, ``agr@10``, ``ndcg_agr@10``, ``kl@10`` (:func:`raysteal.metrics.list_kl`,
    Yue et al.'s KL on the list, ranks at temperature 1), each also ``/head`` and ``/tail`` (``head`` is a
    bool mask over users). With ``test_items`` (held-out next item per user, ``-1`` = none):
    ``student_hr@10``, ``student_ndcg@10``, ``teacher_hr@10``, ``teacher_ndcg@10``.
    """
    s, t = _lists(student_lists, "student lists", 10), _lists(teacher_lists, "teacher lists", 10)
    if len(s) != len(t):
        raise ConfigError(f"student and teacher lists need the same users: {len(s)} vs {len(t)}")
    is_head = np.asarray(head, dtype=bool).reshape(-1)
    if len(is_head) != len(s):
        raise ConfigError(f"head: expected one flag per user ({len(s)}), got {len(is_head)}")
    per_user = {
        "agr@1": np.asarray(top1_agreement(t, s)),
        "agr@10": np.asarray(agreement_at(t, s, 10)),
        "ndcg_agr@10": ndcg_agreement(s, t, 10),
        "kl@10": np.asarray(list_kl(t, s, 10)),  # KL on the teacher's top-10 list (lower = closer)
    }
    out: dict[str, float] = {}
    for name, values in per_user.items():
        out[name] = mean(values)
        out[f"{name}/head"] = mean(values[is_head]) if is_head.any() else math.nan
        out[f"{name}/tail"] = mean(values[~is_head]) if (~is_head).any() else math.nan
    if test_items is not None:
        for who, lists in (("student", s), ("teacher", t)):
            out.update({f"{who}_{key}": value for key, value in next_item_metrics(lists, test_items, 10).items()})
    return out
