"""Fidelity metrics against hand-computed values on tiny cases (arithmetic in the comments)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from raysteal.errors import ConfigError
from raysteal.metrics import (
    agreement_at,
    agreement_at_k,
    exact_match_at_k,
    jaccard_at_k,
    list_kl,
    rank_biased_overlap,
    top1_agreement,
)

NAN = math.nan

TARGET = np.array(
    [
        [1, 2, 3, 4],
        [5, 6, 7, 8],
        [1, 2, -1, -1],  # a short list, padded
        [-1, -1, -1, -1],  # no list at all
    ]
)
CLONE = np.array(
    [
        [4, 3, 9, 10],
        [5, 6, 7, 8],
        [2, -1, -1, -1],  # its -1s must never match the target's -1s
        [-1, 1, 2, 3],
    ]
)


def close(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=0, atol=1e-12, equal_nan=True)


def test_agreement_at_k_zhu_eq3():
    # row 0: {1,2,3,4} ∩ {4,3,9,10} = {3,4} -> 2/4; row 1: 4/4;
    # row 2: |R_t| = 2 valid items, ∩ = {2} -> 1/2; row 3: empty target -> NaN
    close(agreement_at_k(TARGET, CLONE), [0.5, 1.0, 0.5, NAN])
    # k=2: [1,2] vs [4,3] -> 0/2; [5,6] vs [5,6] -> 2/2; [1,2] vs [2,-1] -> 1/2
    close(agreement_at_k(TARGET, CLONE, k=2), [0.0, 1.0, 0.5, NAN])


def test_agreement_at_yue_divides_by_k():
    # same intersections as above, divided by K=4: 2/4, 4/4, 1/4 (short target list), NaN
    close(agreement_at(TARGET, CLONE, k=4), [0.5, 1.0, 0.25, NAN])
    # Agr@1: top items 1|4, 5|5, 1|2, none -> 0, 1, 0, NaN (padding never matches padding)
    close(top1_agreement(TARGET, CLONE), [0.0, 1.0, 0.0, NAN])
    close(agreement_at(TARGET, CLONE, k=1), [0.0, 1.0, 0.0, NAN])


def test_agreement_counts_repeated_ids_once():
    # target {1, 2} (1 repeated) ∩ clone {1, 5, 6} = {1} -> 1/2
    close(agreement_at_k([[1, 1, 2]], [[1, 5, 6]]), [0.5])


def test_exact_match_at_k():
    t = np.array([[1, 2, 3], [1, 2, 3], [1, 2, -1], [1, 2, -1], [-1, -1, -1], [1, 2, 3]])
    c = np.array([[1, 2, 3], [2, 1, 3], [1, 2, -1], [1, 2, 5], [-1, -1, -1], [1, 2, 9]])
    # identical; same items other order; same short list; clone lists an extra item; no list; last differs
    close(exact_match_at_k(t, c), [1.0, 0.0, 1.0, 0.0, NAN, 0.0])
    # only the first 2 positions compared: the last row now matches
    close(exact_match_at_k(t, c, k=2), [1.0, 0.0, 1.0, 1.0, NAN, 1.0])


def test_jaccard_at_k():
    a = np.vstack([TARGET, [[-1, -1, -1, -1]]])
    b = np.vstack([CLONE, [[-1, -1, -1, -1]]])
    # row 0: ∩ {3,4} = 2, ∪ = 4 + 4 - 2 = 6 -> 1/3; row 1: 4/4; row 2: ∩ {2}, ∪ {1,2} -> 1/2
    # row 3: A empty, B = {1,2,3} -> 0/3 = 0; row 4: both empty -> NaN
    close(jaccard_at_k(a, b), [1 / 3, 1.0, 0.5, 0.0, NAN])


def test_rbo_even_depth():
    # a=[1,2,3,4,5], b=[2,3,4,1,5], p=0.9; X_d = 0, 1, 2, 4, 5 for d = 1..5
    # RBO_ext = X_5/5·p^5 + (1-p)/p·Σ X_d/d·p^d
    #         = 0.59049 + (0.1/0.9)·(0 + 0.5·0.81 + (2/3)·0.729 + 1·0.6561 + 1·0.59049)
    #         = 0.59049 + (1/9)·2.13759 = 0.59049 + 0.23751 = 0.82800
    close(rank_biased_overlap([[1, 2, 3, 4, 5]], [[2, 3, 4, 1, 5]], p=0.9), [0.828])


def test_rbo_uneven_depth_and_edge_rows():
    # S=[1,2] (s=2), L=[2,3,1] (l=3), p=0.5; X_1 = 0, X_2 = |{1,2}∩{2,3}| = 1, X_3 = |{1,2}∩{2,3,1}| = 2
    # (1-p)/p = 1; Σ_{d≤3} X_d/d·p^d = 0 + 1/2·1/4 + 2/3·1/8 = 5/24
    # Σ_{d=3} X_s·(d-s)/(s·d)·p^d = 1·1/6·1/8 = 1/48;  tail ((X_l-X_s)/l + X_s/s)·p^l = (1/3 + 1/2)/8 = 5/48
    # total = 10/48 + 1/48 + 5/48 = 1/3
    a = np.array([[1, 2, -1], [2, 3, 1], [1, 2, 3], [1, 2, 3], [1, 2, 3], [-1, -1, -1]])
    b = np.array([[2, 3, 1], [1, 2, -1], [1, 2, 3], [4, 5, 6], [-1, -1, -1], [-1, -1, -1]])
    # symmetric; identical -> 1; disjoint -> 0; one empty -> 0; both empty -> NaN
    close(rank_biased_overlap(a, b, p=0.5), [1 / 3, 1 / 3, 1.0, 0.0, 0.0, NAN])
    # a short list that is a prefix of the long one extrapolates to full agreement:
    # S=[1], L=[1,2], p=0.5: X_1=X_2=1 -> (1/2 + 1/8) + 1·1/2·1/4 + (0/2 + 1/1)·1/4 = 1
    close(rank_biased_overlap([[1, -1]], [[1, 2]], p=0.5), [1.0])


def _rbo_reference(a: list[int], b: list[int], p: float) -> float:
    """Loop-by-loop Webber Eq. 30 on Python lists (checks the vectorised version)."""
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    s, ln = len(short), len(long_)
    if ln == 0:
        return NAN
    if s == 0:
        return 0.0

    def x(d: int) -> int:
        return len(set(short[:d]) & set(long_[:d]))

    sum1 = sum(x(d) / d * p**d for d in range(1, ln + 1))
    sum2 = sum(x(s) * (d - s) / (s * d) * p**d for d in range(s + 1, ln + 1))
    return (1 - p) / p * (sum1 + sum2) + ((x(ln) - x(s)) / ln + x(s) / s) * p**ln


def test_rbo_matches_loop_reference_on_random_padded_lists():
    rng = np.random.default_rng(7)
    rows, width = 200, 8
    a = np.full((rows, width), -1)
    b = np.full((rows, width), -1)
    # distinct items from a small pool (overlaps are common), random lengths, trailing padding
    lengths_a, lengths_b = rng.integers(0, width + 1, rows), rng.integers(0, width + 1, rows)
    for r in range(rows):
        a[r, : lengths_a[r]] = rng.permutation(12)[: lengths_a[r]]
        b[r, : lengths_b[r]] = rng.permutation(12)[: lengths_b[r]]
    expected = [_rbo_reference(list(a[r, : lengths_a[r]]), list(b[r, : lengths_b[r]]), 0.8) for r in range(rows)]
    close(rank_biased_overlap(a, b, p=0.8), expected)


def test_list_kl_against_scores():
    # target [0, 1], τ=1: p ∝ (e^0, e^-1) = (0.7310586, 0.2689414)
    # row 0: clone scores (0, 1, 5) -> q = softmax(0, 1) on items {0,1} = (0.2689414, 0.7310586), item 2 ignored
    #   KL = 0.7310586·ln(e) + 0.2689414·ln(1/e) = 0.7310586 - 0.2689414 = 0.4621172 (= tanh 1/2)
    # row 1: scores (2, 1, 0) -> q = softmax(2, 1) = p -> KL = 0
    # row 2: empty target -> NaN
    target = np.array([[0, 1], [0, 1], [-1, -1]])
    scores = np.array([[0.0, 1.0, 5.0], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    close(list_kl(target, scores), [math.tanh(0.5), 0.0, NAN])


def test_list_kl_against_lists():
    # target [0, 1], τ=1: p = (0.7310586, 0.2689414)
    # row 0: clone [1, 0] -> q ∝ (e^-1, e^0): the mirror of p -> KL = tanh(1/2) = 0.4621172
    # row 1: clone [0, 9]: item 1 unlisted gets rank K' = 2 -> q ∝ (1, e^-2)
    #   log p - log q = r + ln(1+e^-2) - ln(1+e^-1)  for r ∈ {0, 1}
    #   KL = E_p[r] + ln(1+e^-2) - ln(1+e^-1) = 0.2689414 + 0.1269280 - 0.3132617 = 0.0826078
    # row 2: identical lists -> 0
    target = np.array([[0, 1], [0, 1], [3, 4]])
    clone = np.array([[1, 0], [0, 9], [3, 4]])
    expected_1 = 1 / (1 + math.e) + math.log1p(math.exp(-2)) - math.log1p(math.exp(-1))
    close(list_kl(target, clone), [math.tanh(0.5), expected_1, 0.0])
    assert abs(expected_1 - 0.0826078) < 1e-6


def test_list_kl_temperatures():
    # target [0, 1], τ=2: p ∝ (1, e^-0.5); clone scores (0, 0) with clone_temperature 1 -> q = (1/2, 1/2)
    # KL = Σ p ln(2p) = ln 2 + Σ p ln p, p = (0.6224593, 0.3775407)
    #    = 0.6931472 + 0.6224593·ln 0.6224593 + 0.3775407·ln 0.3775407 = 0.6931472 - 0.6628473 = 0.0302999
    p0 = 1 / (1 + math.exp(-0.5))
    expected = math.log(2) + p0 * math.log(p0) + (1 - p0) * math.log(1 - p0)
    close(list_kl([[0, 1]], [[0.0, 0.0]], temperature=2.0, clone_temperature=1.0), [expected])
    assert abs(expected - 0.0302999) < 1e-6
    with pytest.raises(ConfigError, match="temperature"):
        list_kl([[0, 1]], [[0.0, 0.0]], temperature=0.0)


def test_torch_in_torch_out_and_numpy_in_numpy_out():
    out_np = agreement_at_k(TARGET, CLONE)
    out_t = agreement_at_k(torch.as_tensor(TARGET), torch.as_tensor(CLONE))
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float64
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    close(out_t.numpy(), out_np)
    other = TARGET[[1, 0, 3, 2]]  # trailing padding only, as RBO requires
    close(rank_biased_overlap(torch.as_tensor(TARGET), other).numpy(), rank_biased_overlap(TARGET, other))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_agreement_on_gpu_matches_cpu():
    t, c = torch.as_tensor(TARGET).cuda(), torch.as_tensor(CLONE).cuda()
    out = agreement_at_k(t, c)
    assert out.device.type == "cuda"
    close(out.cpu().numpy(), agreement_at_k(TARGET, CLONE))
    scores = torch.tensor([[0.0, 1.0, 5.0]], device="cuda")
    close(list_kl(torch.tensor([[0, 1]], device="cuda"), scores).cpu().numpy(), [math.tanh(0.5)])


def test_large_batch_against_set_reference():
    # B=100k rows of K=100 ids stay O(B·K) memory; check a sample of rows against Python sets
    rng = np.random.default_rng(0)
    rows, k, items = 100_000, 100, 3_000
    target = rng.integers(0, items, (rows, k))
    clone = rng.integers(0, items, (rows, k))
    clone[::2, :50] = target[::2, :50]  # plenty of overlap on half the rows
    out = agreement_at_k(torch.as_tensor(target), torch.as_tensor(clone)).numpy()
    for r in rng.choice(rows, 50, replace=False):
        t = set(target[r].tolist())
        assert out[r] == pytest.approx(len(t & set(clone[r].tolist())) / len(t))


def test_bad_inputs_raise_config_errors():
    with pytest.raises(ConfigError, match="rows"):
        agreement_at_k(TARGET, CLONE[:2])
    with pytest.raises(ConfigError, match="k=5 exceeds"):
        agreement_at_k(TARGET, CLONE, k=5)
    with pytest.raises(ConfigError, match="positive integer"):
        agreement_at(TARGET, CLONE, k=0)
    with pytest.raises(ConfigError, match="integer item ids"):
        agreement_at_k(TARGET.astype(float), CLONE)
    with pytest.raises(ConfigError, match="2-d"):
        jaccard_at_k([1, 2], [1, 2])
    with pytest.raises(ConfigError, match="p must lie"):
        rank_biased_overlap(TARGET, CLONE, p=1.0)
    with pytest.raises(ConfigError, match="padding in a must trail"):
        rank_biased_overlap([[1, -1, 2]], [[1, 2, 3]])
    with pytest.raises(ConfigError, match="one width"):
        exact_match_at_k([[1, 2]], [[1, 2, 3]])


def test_read_only_arrays_are_read_without_a_warning_and_left_as_they_are():
    # Ray's object store hands out read-only arrays; torch warns on sharing them, so they are copied
    target, clone = TARGET.copy(), CLONE.copy()
    target.flags.writeable = False
    clone.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = agreement_at_k(target, clone)
    close(out, agreement_at_k(TARGET, CLONE))
    assert np.array_equal(target, TARGET) and not target.flags.writeable
