"""NaN-skipping means, overall and by group (head/tail)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raysteal.errors import ConfigError
from raysteal.metrics import agreement_at_k, mean, mean_by_group


def test_mean_skips_nan():
    # (1 + 0 + 0.5) / 3 = 0.5; the NaN user (undefined metric) is skipped
    assert mean(np.array([1.0, 0.0, math.nan, 0.5])) == pytest.approx(0.5)
    assert math.isnan(mean(np.array([math.nan])))
    assert mean(torch.tensor([0.25, 0.75], dtype=torch.float64)) == pytest.approx(0.5)


def test_mean_by_group_head_tail():
    values = np.array([1.0, 0.0, math.nan, 0.5])
    groups = np.array(["head", "tail", "tail", "head"])
    # head: (1 + 0.5) / 2 = 0.75; tail: 0 / 1 (NaN skipped) = 0
    assert mean_by_group(values, groups) == {"head": 0.75, "tail": 0.0}
    # bool groups (e.g. is_head) become plain Python keys; an all-NaN group maps to NaN
    out = mean_by_group(torch.tensor([0.2, math.nan, 0.4]), np.array([True, False, True]))
    assert set(out) == {False, True} and all(type(key) is bool for key in out)
    assert out[True] == pytest.approx(0.3) and math.isnan(out[False])


def test_group_breakdown_of_per_user_agreement():
    # agreement per user: 2/4, 4/4, 0/4 -> head users 0, 1: 0.75, tail user 2: 0
    agr = agreement_at_k([[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4]], [[1, 2, 9, 9], [8, 7, 6, 5], [9, 9, 9, 9]])
    assert mean_by_group(agr, np.array([0, 0, 1])) == {0: 0.75, 1: 0.0}


def test_mean_by_group_rejects_mismatched_labels():
    with pytest.raises(ConfigError, match="one label per value"):
        mean_by_group(np.array([1.0, 2.0]), np.array(["head"]))
    with pytest.raises(ConfigError, match="1-d"):
        mean(np.zeros((2, 2)))
