"""Invariants of the target/auxiliary split, the attacker's share and head/tail groups."""

from __future__ import annotations

import numpy as np
import pytest

from raysteal.data import attacker_users, head_tail_groups, load_dataset, split_target_auxiliary
from raysteal.errors import ConfigError


@pytest.fixture(scope="module")
def log():
    return load_dataset("synthetic", num_users=1500, num_items=400, seed=11)


def test_target_auxiliary_disjoint_and_complete(log):
    split = split_target_auxiliary(log, seed=3)
    t, a = split.target_users, split.auxiliary_users
    assert np.intersect1d(t, a).size == 0
    assert np.array_equal(np.union1d(t, a), np.arange(log.num_users))
    assert abs(a.size - log.num_users / 2) <= 1
    assert split.target.num_items == split.auxiliary.num_items == log.num_items
    # every row lands on exactly one side, with the right sequences
    assert split.target.num_interactions + split.auxiliary.num_interactions == log.num_interactions
    for side, users in ((split.target, t), (split.auxiliary, a)):
        for k in (0, side.num_users // 2, side.num_users - 1):
            assert np.array_equal(side.sequence(k), log.sequence(int(users[k])))
        assert np.array_equal(side.user_labels, log.user_labels[users])
    assert split.item_overlap_ratio > 0.95


def test_split_is_deterministic_by_seed(log):
    one, two, other = (split_target_auxiliary(log, seed=s) for s in (5, 5, 6))
    assert np.array_equal(one.target_users, two.target_users)
    assert np.array_equal(one.auxiliary.items, two.auxiliary.items)
    assert not np.array_equal(one.target_users, other.target_users)


def test_aux_fraction(log):
    split = split_target_auxiliary(log, seed=0, aux_fraction=0.2)
    assert split.auxiliary_users.size == round(0.2 * log.num_users)
    with pytest.raises(ConfigError, match="aux_fraction"):
        split_target_auxiliary(log, aux_fraction=1.0)


@pytest.mark.parametrize("overlap", [0.1, 0.5, 0.9])
def test_item_overlap(log, overlap):
    full = split_target_auxiliary(log, seed=2)
    part = split_target_auxiliary(log, seed=2, item_overlap=overlap)
    assert np.array_equal(part.target_users, full.target_users)  # the target side is untouched
    assert np.array_equal(part.target.items, full.target.items)
    shared_before = int(full.overlap_items.sum())
    assert part.overlap_items.sum() == round(overlap * shared_before)
    assert part.item_overlap_ratio == pytest.approx(overlap * full.item_overlap_ratio, abs=0.01)
    # auxiliary rows only on kept items, and no empty auxiliary users
    kept_or_aux_only = part.overlap_items | (full.target.item_counts == 0)
    assert kept_or_aux_only[part.auxiliary.items].all()
    assert part.auxiliary.user_lengths.min() > 0
    assert np.isin(part.auxiliary_users, full.auxiliary_users).all()
    with pytest.raises(ConfigError, match="item_overlap"):
        split_target_auxiliary(log, item_overlap=0.0)


def test_attacker_users(log):
    target = split_target_auxiliary(log, seed=1).target
    chosen = attacker_users(target, seed=4)
    assert chosen.size == round(0.1 * target.num_users)
    assert np.unique(chosen).size == chosen.size and np.all(np.diff(chosen) > 0)
    assert chosen.min() >= 0 and chosen.max() < target.num_users
    assert np.array_equal(chosen, attacker_users(target, seed=4))
    assert not np.array_equal(chosen, attacker_users(target, seed=5))
    assert attacker_users(target, fraction=0.3, seed=0).size == round(0.3 * target.num_users)
    assert attacker_users(target, fraction=1e-9).size == 1
    with pytest.raises(ConfigError):
        attacker_users(target, fraction=0.0)


def test_head_tail_groups(log):
    groups = head_tail_groups(log)
    assert groups.head.size == round(0.2 * log.num_users)
    assert np.intersect1d(groups.head, groups.tail).size == 0
    assert groups.head.size + groups.tail.size == log.num_users
    lengths = log.user_lengths
    assert lengths[groups.head].min() >= lengths[groups.tail].max()
    assert groups.threshold == lengths[groups.head].min()
    assert np.array_equal(groups.is_head, np.isin(np.arange(log.num_users), groups.head))
    # ties go to the lower user id; works on a bare length array
    g = head_tail_groups(np.array([3, 5, 5, 1, 5]), head_fraction=0.4)
    assert g.head.tolist() == [1, 2] and g.tail.tolist() == [0, 3, 4]
    # unsigned lengths (a uint32 column) give the same groups: negating them must not wrap (it put
    # users of length 0 first, as -0 is the smallest unsigned value)
    for dtype in (np.uint32, np.uint64, np.int32):
        assert head_tail_groups(np.array([3, 5, 0, 1, 5], dtype=dtype), head_fraction=0.4).head.tolist() == [1, 4]
    with pytest.raises(ConfigError):
        head_tail_groups(log, head_fraction=1.0)
