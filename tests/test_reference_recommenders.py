"""Item-kNN and EASE against their definitions on tiny logs (raysteal.training.reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysteal.data import load_dataset
from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.training import make_split
from raysteal.training.guard import guard_figures
from raysteal.training.reference import EASE, ItemKNN, history_matrix

# 4 users, 4 items; user 2 has item 1 twice (a repeat counts once)
LOG = Interactions(
    users=np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3]),
    items=np.array([0, 1, 2, 1, 2, 1, 3, 1, 0, 3]),
    num_users=4,
    num_items=4,
)
X = np.array(
    [
        [1, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 1, 0, 1],
        [1, 0, 0, 1],
    ],
    dtype=np.float64,
)


def test_history_rows_are_binary_and_in_the_order_asked():
    dense = history_matrix(LOG, np.array([2, 0])).to_dense().numpy()
    assert np.array_equal(dense, X[[2, 0]])
    assert history_matrix(LOG, np.array([], dtype=np.int64)).to_dense().shape == (0, 4)


def test_item_knn_is_the_cosine_of_the_item_columns_summed_over_the_history():
    # cosine(i, j) = c_ij / sqrt(n_i n_j); e.g. items 1 and 2: c = 2 (users 0, 1), n = 3 and 2
    counts = X.sum(0)
    sim = (X.T @ X) / np.sqrt(np.outer(counts, counts))
    np.fill_diagonal(sim, 0.0)
    assert sim[1, 2] == pytest.approx(2 / np.sqrt(6))
    model = ItemKNN(LOG)
    scores = model.score(torch.arange(4)).numpy()
    np.testing.assert_allclose(scores, X @ sim, rtol=1e-6)
    # only each item's nearest neighbour kept: item 1's nearest is item 2
    top1 = ItemKNN(LOG, neighbours=1).weights.numpy()
    assert np.count_nonzero(top1, axis=1).tolist() == [1, 1, 1, 1]
    assert top1[1, 2] == pytest.approx(2 / np.sqrt(6))


def test_ease_solves_each_items_ridge_regression_on_the_other_items():
    # Eq. 8's closed form equals, column by column, min_b ‖X_j − X_{-j} b‖² + λ‖b‖² with b_j = 0
    lam = 0.7
    weights = EASE(LOG, l2=lam).weights.double().numpy()
    for j in range(4):
        others = [i for i in range(4) if i != j]
        a = X[:, others]
        b = np.linalg.solve(a.T @ a + lam * np.eye(3), a.T @ X[:, j])
        np.testing.assert_allclose(weights[others, j], b, rtol=1e-5, atol=1e-6)
        assert weights[j, j] == 0.0
    np.testing.assert_allclose(EASE(LOG, l2=lam).score(torch.tensor([3])).numpy(), X[[3]] @ weights, rtol=1e-5, atol=1e-6)


def test_bad_settings_and_oversized_catalogues_are_one_line_errors():
    with pytest.raises(ConfigError, match="l2"):
        EASE(LOG, l2=0.0)
    with pytest.raises(ConfigError, match="alpha"):
        ItemKNN(LOG, alpha=1.5)
    with pytest.raises(ConfigError, match="neighbours"):
        ItemKNN(LOG, neighbours=0)
    with pytest.raises(ConfigError, match="limit is 3 items"):
        EASE(LOG, max_items=3)


def test_both_score_under_the_guards_protocol_and_beat_popularity_on_structured_data():
    log = load_dataset("synthetic", num_users=1000, num_items=300, seed=1)
    split = make_split(log, "leave_one_out")
    for model in (ItemKNN(split.train), EASE(split.train, l2=50.0)):
        figures, _ = guard_figures(model, split, seed=0)
        assert figures["users"] > 0
        assert figures["target_lift"] > 1.0, type(model).__name__
