"""Accuracy metrics and negative sampling against hand-computed values on tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raysteal.errors import ConfigError
from raysteal.metrics import (
    csr_select,
    hit_rate_at_k,
    ndcg_at_k,
    ndcg_at_k_sets,
    rank_of_target,
    recall_at_k,
    sample_negatives,
    sampled_rank_of_target,
    topk_items,
)

NAN = math.nan
L2, L3, L6 = 1.0, 1 / math.log2(3), 1 / math.log2(6)  # 1/log2(rank+2) for ranks 0, 1, 4

#                  item: 0    1    2    3    4
SCORES = np.array([[0.1, 0.9, 0.5, 0.3, 0.7], [0.2, 0.4, 0.6, 0.8, 0.0]])


def close(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=0, atol=1e-12, equal_nan=True)


def test_topk_items_full_and_excluded():
    # row 0 by score: 1 (.9), 4 (.7), 2 (.5), 3 (.3), 0 (.1); row 1: 3, 2, 1, 0, 4
    np.testing.assert_array_equal(topk_items(SCORES, 3), [[1, 4, 2], [3, 2, 1]])
    # exclude row 0 {1}, row 1 {3, 2}: as a bool mask and as a CSR pair
    mask = np.zeros((2, 5), dtype=bool)
    mask[0, 1] = mask[1, 3] = mask[1, 2] = True
    expected = [[4, 2, 3], [1, 0, 4]]
    np.testing.assert_array_equal(topk_items(SCORES, 3, exclude=mask), expected)
    np.testing.assert_array_equal(topk_items(SCORES, 3, exclude=(np.array([0, 1, 3]), np.array([1, 3, 2]))), expected)
    # a slice of a larger CSR pointer works as is (rows 1..2 of a 3-row log)
    np.testing.assert_array_equal(topk_items(SCORES, 3, exclude=(np.array([2, 3, 5]), np.array([0, 0, 1, 3, 2]))), expected)


def test_topk_items_pads_rows_short_of_candidates():
    # row 0 keeps only item 0 after excluding 1..4 -> [0, -1, -1]
    mask = np.array([[False, True, True, True, True], [False] * 5])
    np.testing.assert_array_equal(topk_items(SCORES, 3, exclude=mask), [[0, -1, -1], [3, 2, 1]])


def test_topk_items_rejects_bad_k_and_masks():
    for k in (0, 6):
        with pytest.raises(ConfigError, match="k"):
            topk_items(SCORES, k)
    with pytest.raises(ConfigError, match="mask shape"):
        topk_items(SCORES, 2, exclude=np.zeros((2, 4), dtype=bool))
    with pytest.raises(ConfigError, match="indptr must have 3 entries"):
        topk_items(SCORES, 2, exclude=(np.array([0, 1]), np.array([1])))
    with pytest.raises(ConfigError, match=r"item ids must lie in \[0, 5\)"):
        topk_items(SCORES, 2, exclude=(np.array([0, 1, 1]), np.array([7])))


def test_rank_of_target_full_ranking():
    # row 0, target 2 (.5): items 1 (.9) and 4 (.7) score higher -> rank 2
    # row 1, target 0 (.2): items 1, 2, 3 higher -> rank 3
    np.testing.assert_array_equal(rank_of_target(SCORES, [2, 0]), [2, 3])
    # excluding row 0 {1} and row 1 {3} -> ranks 1 and 2; excluding the target itself changes nothing
    mask = np.zeros((2, 5), dtype=bool)
    mask[0, [1, 2]] = True
    mask[1, [3, 0]] = True
    np.testing.assert_array_equal(rank_of_target(SCORES, [2, 0], exclude=mask), [1, 2])
    np.testing.assert_array_equal(rank_of_target(SCORES, [2, 0], exclude=(np.array([0, 2, 4]), np.array([1, 2, 3, 0]))), [1, 2])


def test_rank_of_target_ties_are_pessimistic():
    # row 0 target 0 (1.0): item 4 (2.0) higher, items 1, 2 tie -> 1 + 2 = rank 3
    # row 1 constant scores: all 4 others tie -> rank 4 (last), never 0
    # row 2 NaN target score -> last among the 4 other candidates
    scores = np.array([[1.0, 1.0, 1.0, 0.0, 2.0], [0.5] * 5, [NAN, 0.0, 1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(rank_of_target(scores, [0, 3, 0]), [3, 4, 4])


def test_rank_of_target_rejects_missing_targets():
    with pytest.raises(ConfigError, match="evaluable_users"):
        rank_of_target(SCORES, [2, -1])
    with pytest.raises(ConfigError, match="one item per row"):
        rank_of_target(SCORES, [2])


def test_sampled_rank_of_target():
    # row 0, target 2 (.5), negatives 0 (.1), 3 (.3), 1 (.9), 2 (the target: ignored), -1 (padding)
    #   -> only item 1 beats it: rank 1
    # row 1, target 3 (.8), negatives 0, 1, 2, 4 all lower -> rank 0; row 2 ties count: rank 2
    scores = np.vstack([SCORES, [[0.5, 0.5, 0.5, 0.0, 0.1]]])
    negatives = np.array([[0, 3, 1, 2, -1], [0, 1, 2, 4, 4], [1, 2, 3, 4, -1]])
    np.testing.assert_array_equal(sampled_rank_of_target(scores, [2, 3, 0], negatives), [1, 0, 2])


def test_hit_rate_and_ndcg_single_item():
    rank = np.array([0, 1, 4, 9])
    # k=5: hits for ranks 0, 1, 4; NDCG = 1/log2(rank+2): 1/log2 2 = 1, 1/log2 3 = 0.6309298, 1/log2 6 = 0.3868528
    close(hit_rate_at_k(rank, 5), [1.0, 1.0, 1.0, 0.0])
    close(ndcg_at_k(rank, 5), [L2, L3, L6, 0.0])
    assert L3 == pytest.approx(0.6309298) and L6 == pytest.approx(0.3868528)
    close(ndcg_at_k(rank, 1), [1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="0-based"):
        hit_rate_at_k([-1], 5)


LISTS = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4]])
RELEVANT = np.array([[2, 9, -1], [5, 6, 7], [-1, -1, -1]])
RELEVANT_CSR = (np.array([0, 2, 5, 5]), np.array([2, 9, 5, 6, 7]))


def test_recall_at_k_sets():
    # k=2: row 0 {1,2} ∩ {2,9} = 1 of 2 -> 1/2; row 1 {5,6} ∩ {5,6,7} -> 2/3; row 2 nothing relevant -> NaN
    close(recall_at_k(LISTS, RELEVANT, k=2), [0.5, 2 / 3, NAN])
    close(recall_at_k(LISTS, RELEVANT_CSR, k=2), [0.5, 2 / 3, NAN])
    # k=4: row 1 finds all three -> 1; a repeated relevant item counts once: {2,2,9} -> still 1/2
    close(recall_at_k(LISTS, RELEVANT), [0.5, 1.0, NAN])
    close(recall_at_k(LISTS[:1], [[2, 2, 9]]), [0.5])
    # a 1-d relevant array is one item per user: 2 in row 0's list, 9 not in row 1's, 4 in row 2's
    close(recall_at_k(LISTS, np.array([2, 9, 4])), [1.0, 0.0, 1.0])


def test_ndcg_at_k_sets():
    # k=2, row 0: item 2 relevant at position 1 -> DCG = 1/log2 3 = 0.6309298;
    #   IDCG over min(|rel|=2, 2) = 1 + 0.6309298 = 1.6309298 -> 0.3868528
    # row 1: 5, 6 relevant at 0, 1 -> DCG = IDCG -> 1
    close(ndcg_at_k_sets(LISTS, RELEVANT, k=2), [L3 / (1 + L3), 1.0, NAN])
    assert L3 / (1 + L3) == pytest.approx(0.3868528)
    # k=4, row 1: 5, 6, 7 at 0, 1, 2 -> DCG = 1 + 0.6309298 + 0.5 = IDCG for 3 relevant -> 1
    close(ndcg_at_k_sets(LISTS, RELEVANT_CSR), [L3 / (1 + L3), 1.0, NAN])
    # a repeated list item gains once: [2, 2] vs {2, 9} -> DCG 1, IDCG 1 + 0.6309298
    close(ndcg_at_k_sets([[2, 2]], [[2, 9]]), [1 / (1 + L3)])


def test_csr_select():
    indptr, indices = np.array([0, 2, 2, 5]), np.array([10, 11, 20, 21, 22])
    ptr, idx = csr_select(indptr, indices, [2, 0, 1])
    np.testing.assert_array_equal(ptr, [0, 3, 5, 5])
    np.testing.assert_array_equal(idx, [20, 21, 22, 10, 11])
    with pytest.raises(ConfigError, match="rows must lie"):
        csr_select(indptr, indices, [3])


# A log over 6 items: user 0 saw {0,1,2}, user 1 saw {5}, user 2 saw {0,1,2,3,4} (one unseen: 5),
# user 3 saw everything.
SEEN_PTR = np.array([0, 3, 4, 9, 15])
SEEN_IDX = np.array([0, 1, 2, 5, 4, 3, 2, 1, 0, 0, 1, 2, 3, 4, 5])


def _seen(user: int) -> set[int]:
    return set(SEEN_IDX[SEEN_PTR[user] : SEEN_PTR[user + 1]].tolist())


def test_sample_negatives_uniform_avoids_seen_and_is_seeded():
    users = np.array([0, 1, 2, 0])
    out = sample_negatives(6, SEEN_PTR, SEEN_IDX, users, n=50, generator=np.random.default_rng(3))
    assert out.shape == (4, 50) and out.dtype == np.int64
    for row, user in enumerate(users):
        assert not set(out[row].tolist()) & _seen(int(user))
    assert set(out[2].tolist()) == {5}  # the only item user 2 has not seen
    assert set(out[0].tolist()) == {3, 4, 5}  # 50 uniform draws cover all three unseen items
    again = sample_negatives(6, SEEN_PTR, SEEN_IDX, users, n=50, generator=np.random.default_rng(3))
    np.testing.assert_array_equal(out, again)


def test_sample_negatives_without_replacement_and_exact_fallback():
    users = np.array([0, 1])
    out = sample_negatives(6, SEEN_PTR, SEEN_IDX, users, n=3, generator=np.random.default_rng(0), replace=False)
    assert sorted(out[0].tolist()) == [3, 4, 5]  # all 3 unseen items, each once
    assert len(set(out[1].tolist())) == 3 and 5 not in out[1]
    # max_rounds=0 skips rejection entirely: every row is finished from its exact complement
    out = sample_negatives(6, SEEN_PTR, SEEN_IDX, users, n=3, generator=np.random.default_rng(0), replace=False, max_rounds=0)
    assert sorted(out[0].tolist()) == [3, 4, 5] and len(set(out[1].tolist())) == 3 and 5 not in out[1]
    with pytest.raises(ConfigError, match="user 0 has 3 eligible unseen items, needs 4"):
        sample_negatives(6, SEEN_PTR, SEEN_IDX, users, n=4, generator=np.random.default_rng(0), replace=False)
    with pytest.raises(ConfigError, match="user 3 has 0 eligible"):
        sample_negatives(6, SEEN_PTR, SEEN_IDX, [3], n=1, generator=np.random.default_rng(0))


def test_sample_negatives_popularity_weighted():
    # user 0 may draw 3, 4, 5 with weights 0, 1, 3 -> never 3, and 5 about three times as often as 4
    weights = np.array([5.0, 5.0, 5.0, 0.0, 1.0, 3.0])
    out = sample_negatives(
        6,
        SEEN_PTR,
        SEEN_IDX,
        np.zeros(1000, dtype=np.int64),
        n=40,
        generator=np.random.default_rng(11),
        popularity=weights,
    )
    counts = np.bincount(out.ravel(), minlength=6)
    assert counts[:4].sum() == 0
    assert counts[5] / counts.sum() == pytest.approx(0.75, abs=0.01)  # 40k draws: sd ≈ 0.002
    with pytest.raises(ConfigError, match="popularity"):
        sample_negatives(6, SEEN_PTR, SEEN_IDX, [0], generator=np.random.default_rng(0), popularity=[1.0, -1.0])
    with pytest.raises(ConfigError, match="numpy Generator"):
        sample_negatives(6, SEEN_PTR, SEEN_IDX, [0])


def test_sampled_protocol_end_to_end_torch():
    # a model that scores item i as i: target 5 for user 1 (seen {5}) beats every unseen negative
    scores = torch.arange(6, dtype=torch.float32).repeat(2, 1)
    negatives = sample_negatives(6, SEEN_PTR, SEEN_IDX, [0, 1], n=100, generator=np.random.default_rng(1))
    rank = sampled_rank_of_target(scores, torch.tensor([0, 5]), torch.as_tensor(negatives))
    assert isinstance(rank, torch.Tensor)
    # user 0's target 0 scores below every negative (3, 4, 5): rank = 100; user 1's target tops: rank 0
    np.testing.assert_array_equal(rank.numpy(), [100, 0])
    close(hit_rate_at_k(rank, 10).numpy(), [0.0, 1.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_ranking_on_gpu_matches_cpu():
    scores = torch.as_tensor(SCORES, device="cuda")
    mask = torch.zeros(2, 5, dtype=torch.bool, device="cuda")
    mask[0, 1] = True
    items = topk_items(scores, 3, exclude=mask)
    assert items.device.type == "cuda"
    np.testing.assert_array_equal(items.cpu().numpy(), [[4, 2, 3], [3, 2, 1]])
    rank = rank_of_target(scores, torch.tensor([2, 0], device="cuda"), exclude=(np.array([0, 1, 1]), np.array([1])))
    np.testing.assert_array_equal(rank.cpu().numpy(), [1, 3])
    close(recall_at_k(items, torch.tensor([[2, 9], [5, 6]], device="cuda")).cpu().numpy(), [0.5, 0.0])


def test_equal_scores_rank_the_lowest_item_id_first_and_a_short_list_is_a_long_ones_prefix():
    """Issue 25 item 5: ties in a fixed order (lowest id first), so topk(10) == topk(50)[:10]."""
    from raysteal.metrics.ranking import ranked_top

    scores = torch.tensor([[1.0, 3.0, 3.0, 0.5, 3.0, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    values, items = ranked_top(scores, 4)
    assert items.tolist() == [[1, 2, 4, 0], [0, 1, 2, 3]]
    assert values.tolist() == [[3.0, 3.0, 3.0, 1.0], [2.0, 2.0, 2.0, 2.0]]
    counts = torch.randint(0, 6, (64, 200), generator=torch.Generator().manual_seed(0)).float()  # many ties
    short, long = topk_items(counts, 10), topk_items(counts, 50)
    assert torch.equal(short, long[:, :10])
    for row in range(64):  # within equal scores the ids ascend
        ranked = long[row]
        s = counts[row, ranked]
        same = s[1:] == s[:-1]
        assert bool((ranked[1:][same] > ranked[:-1][same]).all())
    untied = torch.randn(8, 100, generator=torch.Generator().manual_seed(1))  # no tie: exactly torch.topk
    assert torch.equal(ranked_top(untied, 7)[1], torch.topk(untied, 7, dim=1).indices)
