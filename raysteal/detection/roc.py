"""ROC curve and AUC of a detector's scores (positives: attackers; negatives: benign accounts)."""

from __future__ import annotations

import numpy as np

from raysteal.errors import ConfigError


def _checked(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ConfigError(f"scores and labels differ in length ({s.size} vs {y.size})")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ConfigError("labels must be booleans or 0/1 (1: attacker)")
        y = y.astype(bool)
    if np.isnan(s).any():
        raise ConfigError("scores hold NaN")
    if y.all() or not y.any():
        raise ConfigError(f"ROC needs both attackers and benign accounts, got {int(y.sum())} attacker(s) and {int((~y).sum())} benign")
    return s, y


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: the probability that a random attacker scores above a random
    benign account, ties counting one half (the Mann-Whitney U statistic over n_pos * n_neg)."""
    s, y = _checked(scores, labels)
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    pos, neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: flagging every account scoring ``>= thresholds[i]`` flags a share
    ``tpr[i]`` of attackers and ``fpr[i]`` of benign accounts; starts at (0, 0) (threshold +inf)."""
    s, y = _checked(scores, labels)
    thresholds = np.r_[np.inf, np.unique(s)[::-1]]
    tpr = np.array([(s[y] >= t).mean() for t in thresholds])
    fpr = np.array([(s[~y] >= t).mean() for t in thresholds])
    return fpr, tpr, thresholds
