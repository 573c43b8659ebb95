"""Preprocessing: dense ids, chronological order, dedupe, iterative k-core, recipes."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pytest

from raysteal.data import Preprocess, build_interactions, kcore_mask, resolve_preprocess
from raysteal.errors import ConfigError, DataFileError


def brute_kcore(pairs: list[tuple], k: int) -> list[tuple]:
    """Reference iterative k-core with Counters (as shared/data/verify_datasets.py does)."""
    while True:
        uc = collections.Counter(u for u, _ in pairs)
        ic = collections.Counter(i for _, i in pairs)
        kept = [(u, i) for u, i in pairs if uc[u] >= k and ic[i] >= k]
        if len(kept) == len(pairs):
            return kept
        pairs = kept


def test_dense_ids_sorted_by_original_and_labels_kept():
    table = pa.table({"user": ["b", "a", "b", "c"], "item": [30, 10, 20, 10]})
    log = build_interactions(table, "t")
    assert log.user_labels.tolist() == ["a", "b", "c"]
    assert log.item_labels.tolist() == [10, 20, 30]
    assert log.users.tolist() == [0, 1, 1, 2]
    assert log.items.tolist() == [0, 2, 1, 0]  # user b keeps file order 30 then 20 (no timestamps)


def test_chronological_stable_sort():
    table = pa.table({"user": [1, 1, 1, 2], "item": [5, 6, 7, 8], "timestamp": [3, 1, 3, 0]})
    log = build_interactions(table, "t")
    assert log.item_labels[log.items].tolist() == [6, 5, 7, 8]  # 5 before 7: tie keeps file order
    assert log.timestamps.tolist() == [1, 3, 3, 0]


def test_dedupe_keeps_first_chronological_occurrence():
    table = pa.table({"user": [1, 1, 1, 1], "item": [5, 6, 5, 7], "timestamp": [4, 2, 1, 3]})
    log = build_interactions(table, "t", "dedupe")
    assert log.item_labels[log.items].tolist() == [5, 6, 7]
    assert log.timestamps.tolist() == [1, 2, 3]  # the kept 5 is the earliest one


def test_kcore_matches_bruteforce_on_random_logs():
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        users = rng.zipf(1.6, 3000) % 300
        items = rng.zipf(1.4, 3000) % 200
        pairs = sorted(set(zip(users.tolist(), items.tolist())))
        u, i = (np.array(x) for x in zip(*pairs))
        mask = kcore_mask(u, i, k)
        assert sorted(zip(u[mask].tolist(), i[mask].tolist())) == brute_kcore(pairs, k)
        kept = build_interactions(pa.table({"user": u, "item": i}), "t", f"kcore{k}")
        assert kept.num_interactions == int(mask.sum())
        if kept.num_interactions:
            assert kept.user_lengths.min() >= k and kept.item_counts.min() >= k


def test_kcore_compacts_ids_and_keeps_labels():
    # item 99 is seen once -> dropped; then user 3 has 1 row -> dropped
    table = pa.table({"user": [1, 1, 2, 2, 3, 3], "item": [10, 20, 10, 20, 10, 99]})
    log = build_interactions(table, "t", "kcore2")
    assert log.user_labels.tolist() == [1, 2]
    assert log.item_labels.tolist() == [10, 20]
    assert (log.num_users, log.num_items, log.num_interactions) == (2, 2, 4)


def test_preprocess_specs():
    assert Preprocess.parse("none") == Preprocess()
    assert Preprocess.parse("dedupe+kcore10") == Preprocess(dedupe=True, kcore=10)
    assert Preprocess.parse("5-core").kcore == 5
    assert Preprocess.parse("kcore5").name == "kcore5"
    assert Preprocess(dedupe=True, kcore=10).name == "dedupe+kcore10"
    assert resolve_preprocess("tafeng", "paper") == Preprocess(dedupe=True, kcore=10)
    assert resolve_preprocess("tafeng", "paper", kcore=5) == Preprocess(dedupe=True, kcore=5)
    assert resolve_preprocess("ml-1m", "none", kcore=5) == Preprocess(kcore=5)
    with pytest.raises(ConfigError, match="unknown preprocess step 'bogus'"):
        Preprocess.parse("dedupe+bogus")
    with pytest.raises(ConfigError):
        Preprocess(kcore=-1)


def test_everything_filtered_is_an_error():
    with pytest.raises(DataFileError, match="no interactions left"):
        build_interactions(pa.table({"user": [1, 2], "item": [1, 2]}), "t", "kcore3")
