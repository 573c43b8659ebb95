"""Averages of per-user metric values: overall and by group (head/tail users, ...)."""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np
import torch

from raysteal.errors import ConfigError
from raysteal.metrics.arrays import ArrayLike


def _values(values: object) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ConfigError(f"values must be a 1-d vector of per-user values, got shape {v.shape}")
    return v


def mean(values: ArrayLike) -> float:
    """Mean of per-user values, skipping ``NaN`` (users where the metric is undefined); ``NaN``
    when no value is defined."""
    v = _values(values)
    ok = ~np.isnan(v)
    return float(v[ok].mean()) if ok.any() else math.nan


def _label(x: object) -> Hashable:
    return x.item() if isinstance(x, np.generic) else x


def mean_by_group(values: ArrayLike, groups: ArrayLike) -> dict[Hashable, float]:
    """``{group: mean}`` over users, one label per user in ``groups`` (e.g. ``"head"``/``"tail"``).

    ``NaN`` values are skipped as in :func:`mean`; a group whose values are all ``NaN`` maps to
    ``NaN``. Keys are plain Python scalars in sorted order.
    """
    v = _values(values)
    if isinstance(groups, torch.Tensor):
        groups = groups.detach().cpu().numpy()
    g = np.asarray(groups)
    if g.shape != v.shape:
        raise ConfigError(f"groups must give one label per value: {g.shape} vs {v.shape}")
    labels, inverse = np.unique(g, return_inverse=True)
    ok = ~np.isnan(v)
    sums = np.bincount(inverse[ok], weights=v[ok], minlength=labels.size)
    counts = np.bincount(inverse[ok], minlength=labels.size)
    return {_label(label): (float(s / c) if c else math.nan) for label, s, c in zip(labels, sums, counts)}
