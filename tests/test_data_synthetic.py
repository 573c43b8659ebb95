"""The synthetic long-tail generator: determinism, shape, sequential and taste structure."""

from __future__ import annotations

import numpy as np
import pytest

from raysteal.data import SyntheticConfig, generate_synthetic, load_dataset
from raysteal.data.synthetic import item_clusters
from raysteal.errors import ConfigError


@pytest.fixture(scope="module")
def log():
    return load_dataset("synthetic")


def test_defaults_registered_and_shaped(log):
    cfg = SyntheticConfig()
    assert (log.num_users, log.num_items) == (cfg.num_users, cfg.num_items) == (2000, 500)
    assert log.user_lengths.min() >= cfg.min_len and log.user_lengths.max() <= cfg.max_len
    # no repeated (user, item) pair
    assert np.unique(log.users * log.num_items + log.items).size == log.num_interactions


def test_deterministic_per_seed():
    a, b = generate_synthetic(seed=7, num_users=300), generate_synthetic(seed=7, num_users=300)
    c = generate_synthetic(seed=8, num_users=300)
    assert a.equals(b)
    assert not a.equals(c)
    assert generate_synthetic(SyntheticConfig(seed=7, num_users=300)).equals(a)


def test_long_tail_users_and_items(log):
    counts = np.sort(log.item_counts)[::-1]
    top20 = counts[: counts.size // 5].sum() / counts.sum()
    assert top20 > 0.5  # the top 20% of items hold most interactions
    lengths = log.user_lengths
    assert np.median(lengths) < 0.5 * lengths.mean() + 5  # skewed: mean pulled up by a few heavy users
    heavy = np.sort(lengths)[::-1][: lengths.size // 5].sum() / lengths.sum()
    assert heavy > 0.5  # the top 20% of users hold most interactions


def test_next_item_structure(log):
    """Consecutive items follow each item's fixed successor far more often than chance."""
    same_user = log.users[1:] == log.users[:-1]
    prev, nxt = log.items[:-1][same_user], log.items[1:][same_user]

    def top1_share(a, b):
        key = a * log.num_items + b
        uniq, cnt = np.unique(key, return_counts=True)
        best = np.zeros(log.num_items)
        np.maximum.at(best, uniq // log.num_items, cnt)
        return best.sum() / a.size

    shuffled = np.random.default_rng(0).permutation(nxt)
    assert top1_share(prev, nxt) > 0.2
    assert top1_share(prev, nxt) > 3 * top1_share(prev, shuffled)


def test_user_taste_structure(log):
    """Taste persists: the clusters of a user's early items predict those of its later items."""
    clusters = item_clusters(SyntheticConfig())[log.item_labels]  # per dense item id
    k = SyntheticConfig().num_clusters
    shares = []
    for u in np.flatnonzero(log.user_lengths >= 30):
        seq = clusters[log.sequence(u)]
        early, late = seq[: seq.size // 2], seq[seq.size // 2 :]
        top3 = np.argsort(-np.bincount(early, minlength=k), kind="stable")[:3]
        shares.append(np.isin(late, top3).mean())
    assert len(shares) > 50
    assert np.mean(shares) > 0.25  # vs 3 / k = 15% if users had no persistent taste (measured: 0.32)


def test_bad_parameters():
    with pytest.raises(ConfigError, match="unknown_key|Extra inputs"):
        load_dataset("synthetic", unknown_key=1)
    with pytest.raises(ConfigError, match="max_len"):
        generate_synthetic(min_len=10, max_len=5)
    with pytest.raises(ConfigError, match="min_len"):
        generate_synthetic(num_items=4, min_len=5, max_len=5, num_clusters=2)


def test_scales_vectorised():
    import time

    start = time.perf_counter()
    table = generate_synthetic(num_users=20_000, num_items=3_000, max_len=100, seed=1)
    assert time.perf_counter() - start < 10
    assert table.num_rows > 100_000
