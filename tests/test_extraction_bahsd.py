"""BAHSD: multi-scale probing, the loss terms on hand-computed cases, the ablation switches, and a
tiny end-to-end run against an in-process sequential target."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raysteal.errors import ConfigError
from raysteal.extraction.bahsd import BAHSDConfig, BAHSDObjective, prefix_item_mask, suffix_inputs
from raysteal.extraction.bahsd_losses import (
    bahsd_loss,
    dynamic_temperature,
    info_nce,
    item_weights,
    kl_rank_distillation,
    kl_rank_distillation_reference,
    listwise_consistency,
    mixing_weight,
    pairwise_consistency,
    rank_soft_targets,
)
from raysteal.extraction.config import make_extraction_config
from raysteal.extraction.probing import (
    ProbeSpec,
    dropout_views,
    list_agreement,
    nearest_marked,
    planned_probe_queries,
    probe,
    probe_schedule,
    probes_per_sequence,
    stability_share,
    suffix_lengths,
    suffix_views,
)
from raysteal.extraction.student import student_hidden
from raysteal.extraction.types import ExtractionSet, StudentBatch
from raysteal.models import build_model
from raysteal.oracle import TargetSpec, in_process_oracle
from raysteal.training.trainer import seeded_model

NUM_ITEMS, WIDTH, K = 40, 10, 8


def _random_sequences(rng: np.random.Generator, n: int = 9, width: int = WIDTH) -> np.ndarray:
    seqs = np.full((n, width), -1, dtype=np.int64)
    for row, length in enumerate(rng.integers(1, width + 1, n)):
        seqs[row, width - length :] = rng.choice(NUM_ITEMS, length, replace=False)
    return seqs


def _label_all(client, seqs: np.ndarray, k: int = K) -> ExtractionSet:
    """Every prefix answered (the test's own labelling, independent of synthesis.py)."""
    n, width = seqs.shape
    lists = np.full((n, width, k), -1, dtype=np.int32)
    rows, cols = np.nonzero(seqs >= 0)
    prefixes = np.where(np.arange(width)[None, :] <= cols[:, None], seqs[rows], -1)
    lists[rows, cols] = client.query(prefixes, k)
    return ExtractionSet(seqs, lists, len(rows))


@pytest.fixture(scope="module")
def sasrec_oracle():
    torch.manual_seed(0)
    model = build_model({"model": "sasrec", "max_len": WIDTH, "embedding_dim": 16}, 0, NUM_ITEMS)
    oracle = in_process_oracle(TargetSpec(model=model.eval()), device="cpu")
    yield oracle
    oracle.close()


class FixedRankingClient:
    """A black box whose answer ignores the sequence: a fixed ranking minus the query's own items."""

    def __init__(self, num_items: int):
        self.ranking = np.arange(num_items)[::-1].copy()
        self.spent = 0
        self.remaining_budget = -1

    def query(self, inputs, k):
        inputs = np.asarray(inputs)
        seen = np.zeros((len(inputs), len(self.ranking)), dtype=bool)
        rows, cols = np.nonzero(inputs >= 0)
        seen[rows, inputs[rows, cols]] = True
        keep = ~seen[:, self.ranking]
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        self.spent += len(inputs)
        return self.ranking[order]


# ----------------------------------------------------------------------------- probing
def test_views_schedule_and_nearest_are_as_specified():
    seqs = np.array([[-1, -1, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]])
    assert suffix_lengths(np.array([0, 1, 3, 4, 8]), 0.5).tolist() == [0, 1, 2, 2, 4]
    views = suffix_views(seqs, np.array([0, 1]), np.array([4, 5]), np.array([2, 3]))
    assert views.tolist() == [[-1, -1, -1, -1, 6, 7], [-1, -1, -1, 4, 5, 6]]
    drop = dropout_views(seqs, np.array([0, 1, 0]), np.array([5, 5, 2]), 0.5, np.random.default_rng(0))
    kept0 = drop[0][drop[0] >= 0]
    assert len(kept0) == 2 and set(kept0) < {5, 6, 7, 8} and list(kept0) == sorted(kept0)  # order kept
    assert (drop[1] >= 0).sum() == 3 and drop[2].tolist() == [-1, -1, -1, -1, -1, 5]  # one item: unchanged
    queried = np.array([[False, False, True, True, True, True, True, True]])
    assert probe_schedule(queried, 3).tolist() == [[-1, -1, -1, -1, 1, -1, -1, 0]]  # last, then every 3rd back
    marked = np.array([[False, True, False, False, True, False], [False] * 6])
    assert nearest_marked(marked).tolist() == [[1, 1, 1, 4, 4, 4], [-1] * 6]


def test_probe_spends_exactly_the_queries_it_says(sasrec_oracle):
    rng = np.random.default_rng(1)
    client = sasrec_oracle.register_attacker("probe-exact")
    data = _label_all(client, _random_sequences(rng))
    spec = ProbeSpec(scales=(1.0, 0.5, 0.25), dropout=(0.3,), views=2, every=3)
    planned = planned_probe_queries(data, spec)
    before = client.spent
    result = probe(client, data, spec, rng=rng, query_batch=7)
    assert result.queries == client.spent - before == planned == result.planned_queries > 0
    assert result.data.queries == data.queries + result.queries
    rel, stab = result.data.extras["reliability"], result.data.extras["stability"]
    assert rel.dtype == np.float32 and rel.shape == data.sequences.shape
    assert stab.dtype == np.float32 and stab.shape == data.lists.shape
    assert ((rel >= 0) & (rel <= 1)).all() and ((stab >= 0) & (stab <= 1)).all()
    assert (stab[data.lists < 0] == 0).all()
    # each sequence's last prefix is probed (if it has a view worth a query)
    lengths = (data.sequences >= 0).sum(1)
    assert result.data.extras["probed"][lengths > 1, -1].all()
    # a budget cap is never exceeded and is spent in whole prefixes
    before = client.spent
    capped = probe(client, data, spec, rng=rng, query_budget=planned // 2)
    assert capped.queries == client.spent - before <= planned // 2 and capped.queries > 0
    assert 0 < capped.probed_prefixes < result.probed_prefixes
    # the client's own budget is respected: probing stops, it does not raise
    small = sasrec_oracle.register_attacker("probe-small", budget=5)
    capped = probe(small, data, spec, rng=rng)
    assert capped.queries == small.spent <= 5


def test_probe_of_a_sequence_blind_target_is_fully_reliable():
    client = FixedRankingClient(NUM_ITEMS)
    data = _label_all(client, _random_sequences(np.random.default_rng(2)))
    for metric in ("rbo", "jaccard"):
        spec = ProbeSpec(scales=(0.5, 0.25), dropout=(0.4,), views=1, every=2, metric=metric)
        result = probe(client, data, spec, rng=np.random.default_rng(0))
        assert result.queries > 0
        queried = data.queried & ((data.sequences >= 0).sum(1) > 1)[:, None]
        assert np.allclose(result.data.extras["reliability"][queried], 1.0)
        assert np.allclose(result.data.extras["stability"][data.queried], 1.0)
        # a one-item sequence has no view that differs from it: default reliability, no query
        single = (data.sequences >= 0).sum(1) == 1
        assert single.any() and np.allclose(result.data.extras["reliability"][single], spec.default_reliability)


def test_agreement_and_stability_on_hand_cases():
    full = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    assert np.allclose(list_agreement(full, full), 1.0) and np.allclose(list_agreement(full, full, "jaccard"), 1.0)
    # a shorter probe list is compared at its own depth: [1, 2] vs the top-2 of the full list
    probe_lists = np.array([[5, 6, 7, 8], [1, 2, -1, -1], [1, 9, -1, -1]])
    full3 = np.array([[1, 2, 3, 4]] * 3)
    assert list_agreement(full3, probe_lists, "jaccard").tolist() == pytest.approx([0.0, 1.0, 1 / 3])
    rbo = list_agreement(full3, probe_lists, rbo_p=0.5)
    # RBO at depth 2, p = .5: X_1 = 1, X_2 = 1 → (1-p)/p·(1·p + ½·p²) + ½·p² = .5 + .125 + .125
    assert rbo.tolist() == pytest.approx([0.0, 1.0, 0.75])
    views = np.array([[[1, 2, 9, 9], [2, 3, 9, 9]], [[1, 1, 1, 1], [4, 4, 4, 4]], [[2, 7, -1, -1], [0, 0, 0, 0]]])
    ok = np.array([[True, True], [True, False], [True, False]])
    share = stability_share(np.array([[1, 2, 3, -1], [1, 2, 3, 4], [1, 2, 3, 4]]), views, ok)
    # row 3: its only view covers ranks 0-1 (item 1 absent, item 2 present); ranks 2-3 get the row mean
    assert share.tolist() == [[0.5, 1.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.5, 0.5]]
    with pytest.raises(ConfigError, match="probe_scales"):
        ProbeSpec(scales=(1.5,))
    with pytest.raises(ConfigError, match="probe_every"):
        ProbeSpec(every=0)


def test_probes_per_sequence_counts_a_full_sequence():
    spec = ProbeSpec(scales=(0.5, 0.25), every=4)
    # 12 prefixes, probed from the back: lengths 12, 8, 4 → 2 views each (no duplicates)
    assert probes_per_sequence(12, spec) == 6
    # prefix of length 1: no suffix view differs from it → no query
    assert probes_per_sequence(1, spec) == 0


# ----------------------------------------------------------------------------- losses
def test_rank_soft_targets_and_kl_match_hand_values():
    lists = torch.tensor([[3, 1, -1]])
    p = rank_soft_targets(lists, torch.tensor([1.0]))
    z = 1 + math.exp(-1)
    assert torch.allclose(p, torch.tensor([[1 / z, math.exp(-1) / z, 0.0]]))
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    lists = torch.tensor([[2, 0]])
    t = 2.0
    pz = 1 + math.exp(-1 / t)
    p2, p0 = 1 / pz, math.exp(-1 / t) / pz
    norm = sum(math.exp(s / t) for s in (0.0, 1.0, 2.0, 3.0))
    q2, q0 = math.exp(2.0 / t) / norm, math.exp(0.0) / norm
    expected = p2 * math.log(p2 / q2) + p0 * math.log(p0 / q0)
    kl = kl_rank_distillation(scores, lists, torch.tensor([t]))
    assert kl.item() == pytest.approx(expected, rel=1e-5)
    assert kl_rank_distillation(scores, lists, torch.tensor([t]), scale_t2=True).item() == pytest.approx(expected * t * t, rel=1e-5)
    # excluding item 3 renormalises q over items 0..2
    norm_x = sum(math.exp(s / t) for s in (0.0, 1.0, 2.0))
    expected_x = p2 * math.log(p2 / (math.exp(1.0) / norm_x)) + p0 * math.log(p0 / (1.0 / norm_x))
    excl = torch.tensor([[False, False, False, True]])
    assert kl_rank_distillation(scores, lists, torch.tensor([t]), exclude=excl).item() == pytest.approx(expected_x, rel=1e-5)


@pytest.mark.parametrize("scale_t2", [False, True])
def test_the_chunked_kl_equals_the_dense_definition_in_value_and_gradient(monkeypatch, scale_t2):
    import raysteal.extraction.bahsd_losses as losses

    monkeypatch.setattr(losses, "KL_CHUNK_BYTES", 3 * 40 * 4)  # 3 rows of 40 items a chunk: 7 rows need 3 chunks
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(7, 40, generator=g)
    lists = torch.rand(7, 40, generator=g).argsort(1)[:, :6]
    lists[1, 3:] = -1  # a short answer
    lists[4] = -1  # no answer at all: KL 0, no gradient
    exclude = torch.rand(7, 40, generator=g) < 0.3
    exclude[2, lists[2, 0]] = True  # a listed item is never masked
    temp = 0.5 + 4 * torch.rand(7, generator=g)
    weights = torch.rand(7, generator=g)
    out = {}
    for name, fn in (("dense", kl_rank_distillation_reference), ("chunked", kl_rank_distillation)):
        z = scores.clone().requires_grad_()
        kl = fn(z, lists, temp, exclude=exclude, scale_t2=scale_t2)
        (weights * kl).sum().backward()
        out[name] = (kl.detach(), z.grad)
    assert torch.allclose(out["chunked"][0], out["dense"][0], rtol=1e-5, atol=1e-5)
    assert torch.allclose(out["chunked"][1], out["dense"][1], rtol=1e-5, atol=1e-7)
    assert out["chunked"][0][4] == 0 and torch.count_nonzero(out["chunked"][1][4]) == 0
    # a temperature that needs its own gradient takes the dense path, which gives it one
    t = temp.clone().requires_grad_()
    kl_rank_distillation(scores, lists, t, exclude=exclude).sum().backward()
    assert t.grad is not None and torch.count_nonzero(t.grad) > 0


def test_temperature_and_mixing_weight_match_hand_values():
    c = torch.tensor([0.0, 0.25, 1.0])
    assert torch.allclose(dynamic_temperature(c, 1.0, 5.0, gamma=2.0), torch.tensor([1.0, 1.25, 5.0]))
    assert torch.allclose(dynamic_temperature(c, 1.0, 5.0), torch.tensor([1.0, 2.0, 5.0]))
    w = mixing_weight(torch.tensor([0.7, 0.5, 0.3]), threshold=0.5, sharpness=0.1)
    assert torch.allclose(w, torch.tensor([1 / (1 + math.exp(-2)), 0.5, 1 / (1 + math.exp(2))]))
    assert torch.allclose(item_weights(torch.tensor([0.0, 1.0]), 0.2), torch.tensor([0.2, 1.0]))
    with pytest.raises(ConfigError, match="t_max"):
        dynamic_temperature(c, 2.0, 1.0)
    with pytest.raises(ConfigError, match="sharpness"):
        mixing_weight(c, 0.5, 0.0)


def test_ranking_consistency_matches_hand_values():
    scores = torch.tensor([[3.0, 2.8, 1.0]])
    neg = torch.tensor([[2.9, 0.0, 0.7]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    weights = torch.tensor([[1.0, 0.5, 0.2]])
    # pairs: (3, 2.8) hinge .3 weight .75; (2.8, 1) hinge 0 → .225 / 2
    # item p vs negative p: (3 vs 2.9) .4 · 1; (2.8 vs 0) 0; (1 vs .7) .2 · .2 → .44 / 3
    expected = 0.225 / 2 + 0.44 / 3
    assert pairwise_consistency(scores, neg, valid, weights, margin=0.5).item() == pytest.approx(expected, rel=1e-5)
    # padding: the third item gone leaves one pair and two negative pairs; a masked negative drops its pair
    valid_pad = torch.tensor([[True, True, False]])
    assert pairwise_consistency(scores, neg, valid_pad, weights, 0.5).item() == pytest.approx(0.225 + 0.4 / 2, rel=1e-5)
    neg_ok = torch.tensor([[False, True, True]])
    assert pairwise_consistency(scores, neg, valid, weights, 0.5, neg_ok).item() == pytest.approx(0.225 / 2 + 0.04 / 2, rel=1e-5)
    # all weights 1: each row is Yue et al.'s loss (raysteal.extraction.losses) of that prefix
    from raysteal.extraction.losses import ranking_loss_terms

    ones = torch.ones(1, 3)
    yue = sum(ranking_loss_terms(scores, neg, margin=0.5))
    assert pairwise_consistency(scores, neg, valid, ones, 0.5).item() == pytest.approx(yue.item(), rel=1e-6)
    s, n = torch.tensor([[2.0, 1.0]]), torch.tensor([[0.0]])
    e = math.exp
    listwise = (math.log(e(2) + e(1) + e(0)) - 2 + 0.5 * (math.log(e(1) + e(0)) - 1)) / 2
    got = listwise_consistency(s, n, torch.ones(1, 2, dtype=torch.bool), torch.tensor([[1.0, 0.5]]))
    assert got.item() == pytest.approx(listwise, rel=1e-5)


def test_info_nce_matches_hand_values():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    r = 1 / math.sqrt(2)

    def lse(*v):
        return math.log(sum(math.exp(a) for a in v))

    expected = [0.5 * ((lse(1, r) - 1) + (lse(1, 0) - 1)), 0.5 * ((lse(0, r) - r) + (lse(r, r) - r))]
    got = info_nce(x, y, tau=1.0)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert info_nce(x, y, tau=0.5).tolist() != pytest.approx(expected)
    # two prefixes of one sequence are not each other's negatives: only the positive remains
    assert info_nce(x, y, tau=1.0, groups=torch.tensor([4, 4])).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_total_loss_combines_the_branches_as_item_4():
    w = torch.tensor([0.2, 0.9])
    kl, rank, nce = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 6.0])
    assert bahsd_loss(w, kl, rank, nce, 0.5).item() == pytest.approx((0.2 + 0.8 * 5.5 + 1.8 + 0.1 * 7.0) / 2)
    assert bahsd_loss(w, kl, rank, None, 0.5).item() == pytest.approx((0.2 + 0.8 * 3 + 1.8 + 0.1 * 4) / 2)
    assert bahsd_loss(w, None, None, nce, 2.0).item() == pytest.approx((0.8 * 10 + 0.1 * 12) / 2)


def test_inherited_stability_ignores_items_the_probed_prefix_held():
    views = np.array([[[1, 2, 3, 4]]])
    # item 9 was in the probed prefix, so its probe answers could not list it: unknown → row mean
    share = stability_share(np.array([[1, 9, 5, -1]]), views, np.array([[True]]), unknown=np.array([[False, True, False, False]]))
    assert share.tolist() == [[1.0, 0.5, 0.0, 0.0]]


# ----------------------------------------------------------------------------- objective & ablations


def test_suffix_inputs_and_prefix_mask():
    inputs = torch.tensor([[-1, 3, 4, 5], [6, 7, 8, 9]])
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([3, 2, 3])
    view = suffix_inputs(inputs, rows, cols, torch.tensor([2, 3, 1]))
    assert view.tolist() == [[-1, 4, 5], [6, 7, 8], [-1, -1, 9]]
    mask = prefix_item_mask(inputs, rows, cols, 10)
    assert [torch.nonzero(m).flatten().tolist() for m in mask] == [[3, 4, 5], [6, 7, 8], [6, 7, 8, 9]]


def _probed_batch(seed: int = 3):
    """A StudentBatch with BAHSD extras (varied reliability and stability) over random prefixes."""
    rng = np.random.default_rng(seed)
    client = FixedRankingClient(NUM_ITEMS)
    data = _label_all(client, _random_sequences(rng, n=6))
    n, width, k = data.lists.shape
    rows, cols = np.nonzero(data.queried)
    lead = 2  # as train_student does: inputs lose leading all-pad columns, extras keep them
    seqs = np.concatenate([np.full((n, lead), -1), data.sequences], axis=1)
    extras = {
        "reliability": np.concatenate([np.zeros((n, lead)), rng.random((n, width))], axis=1).astype(np.float32),
        "stability": np.concatenate([np.zeros((n, lead, k)), rng.random((n, width, k))], axis=1).astype(np.float32),
        "view_len": np.concatenate([np.zeros((n, lead)), np.maximum(1, np.cumsum(data.sequences >= 0, 1) // 2)], axis=1).astype(np.int32),
    }
    lists = torch.as_tensor(data.lists[rows, cols]).long()
    negatives = torch.as_tensor(rng.integers(0, NUM_ITEMS, (len(rows), 5)))
    batch = StudentBatch(
        torch.arange(n),
        torch.as_tensor(seqs[:, lead:]),
        torch.as_tensor(rows),
        torch.as_tensor(cols),
        lists,
        negatives,
        {key: torch.as_tensor(v) for key, v in extras.items()},
    )
    student = seeded_model({"model": "sasrec", "max_len": width, "embedding_dim": 16}, 0, NUM_ITEMS, seed=1).eval()
    return student, batch


def _loss(student, batch, **overrides):
    cfg = BAHSDConfig(**{"attack": "bahsd", **overrides})
    with torch.no_grad():
        return BAHSDObjective.from_config(cfg)(student, batch)[0].item()


def test_every_component_moves_the_loss_when_on():
    student, batch = _probed_batch()
    base = _loss(student, batch)
    assert math.isfinite(base)
    assert _loss(student, batch, infonce_weight=5.0) != pytest.approx(base)  # InfoNCE term present
    assert _loss(student, batch, margin=2.0) != pytest.approx(base)  # ranking term present
    assert _loss(student, batch, t_max=9.0) != pytest.approx(base)  # dynamic temperature used
    assert _loss(student, batch, threshold=0.9) != pytest.approx(base)  # adaptive weight used
    batch.extras["stability"] = torch.rand(batch.extras["stability"].shape, generator=torch.Generator().manual_seed(9))
    assert _loss(student, batch) != pytest.approx(base)  # stability weights used
    assert _loss(student, batch, rank_loss="listwise") != pytest.approx(_loss(student, batch))


def test_infonce_over_a_sample_of_prefixes_is_the_sampled_terms_scaled_by_the_batch_share():
    """infonce_prefixes = m: InfoNCE among m prefixes drawn at random (the global torch stream),
    each term scaled by P / m, the other prefixes 0; m >= P is the whole batch, as before."""
    student, batch = _probed_batch()
    count = len(batch.rows)
    lead = batch.extras["reliability"].shape[1] - batch.inputs.shape[1]
    ecols = batch.cols + lead
    with torch.no_grad():
        hidden = student_hidden(student, batch)
        full = BAHSDObjective.from_config(BAHSDConfig(attack="bahsd"))
        whole = full.contrastive_term(student, batch, hidden, ecols)
        same = BAHSDObjective.from_config(BAHSDConfig(attack="bahsd", infonce_prefixes=count))
        assert torch.allclose(same.contrastive_term(student, batch, hidden, ecols), whole)
        m = 7
        sampled = BAHSDObjective.from_config(BAHSDConfig(attack="bahsd", infonce_prefixes=m))
        torch.manual_seed(5)
        got = sampled.contrastive_term(student, batch, hidden, ecols)
        torch.manual_seed(5)
        take = torch.randperm(count)[:m].sort().values
        rows, cols = batch.rows[take], batch.cols[take]
        lengths = batch.extras["view_len"][rows, ecols[take]].long()
        second = student.represent_last(student.prepare(suffix_inputs(batch.inputs, rows, cols, lengths)))
        want = info_nce(hidden[take], second, 0.2, groups=batch.sequence_ids[rows]) * (count / m)
    assert int((got != 0).sum()) <= m and torch.allclose(got[take], want, atol=1e-6)
    assert float(got.sum()) == pytest.approx(float(want.sum()), rel=1e-5)
    with pytest.raises(Exception, match="infonce_prefixes"):
        BAHSDConfig(attack="bahsd", infonce_prefixes=1)


def test_each_prefix_reads_its_own_probe_columns():
    """Inputs lose leading all-padding columns in the student loop, the extras keep them: each
    prefix's reliability (hence w and T) must be read ``lead`` columns further right."""
    student, batch = _probed_batch()
    lead = batch.extras["reliability"].shape[1] - batch.inputs.shape[1]
    assert lead == 2
    own = batch.extras["reliability"][batch.rows, batch.cols + lead]
    objective = BAHSDObjective.from_config(BAHSDConfig(attack="bahsd"))
    with torch.no_grad():
        _, logs = objective(student, batch)
    assert float(logs["w"]) == pytest.approx(float(objective.weight(own).mean()))
    assert float(logs["temperature"]) == pytest.approx(float(objective.temperature(own).mean()))
    unshifted = batch.extras["reliability"][batch.rows, batch.cols]
    assert float(objective.weight(unshifted).mean()) != pytest.approx(float(logs["w"]))  # the test can tell


def test_ablation_switches_really_remove_their_component():
    student, batch = _probed_batch()
    # infonce=False: the InfoNCE weight, temperature and view no longer matter
    off = _loss(student, batch, infonce=False)
    assert _loss(student, batch, infonce=False, infonce_weight=5.0, infonce_tau=0.05) == pytest.approx(off)
    batch.extras.pop("view_len")  # not even read
    assert _loss(student, batch, infonce=False) == pytest.approx(off)
    student, batch = _probed_batch()
    # ranking_consistency=False: margin, rank loss kind and stability no longer matter
    off = _loss(student, batch, ranking_consistency=False)
    assert _loss(student, batch, ranking_consistency=False, margin=3.0, rank_loss="listwise") == pytest.approx(off)
    batch.extras["stability"] = torch.zeros_like(batch.extras["stability"])
    assert _loss(student, batch, ranking_consistency=False) == pytest.approx(off)
    # stability_weighting=False: stability values no longer matter
    off = _loss(student, batch, stability_weighting=False)
    batch.extras["stability"] = torch.ones_like(batch.extras["stability"])
    assert _loss(student, batch, stability_weighting=False) == pytest.approx(off)
    # dynamic_temperature=False: every prefix gets the fixed T, t_min / t_max / gamma no longer matter
    cfg = BAHSDConfig(attack="bahsd", dynamic_temperature=False, fixed_temperature=3.0)
    c = torch.linspace(0, 1, 11)
    assert torch.all(BAHSDObjective.from_config(cfg).temperature(c) == 3.0)
    assert len(set(BAHSDObjective.from_config(BAHSDConfig(attack="bahsd")).temperature(c).tolist())) == 11
    off = _loss(student, batch, dynamic_temperature=False)
    assert _loss(student, batch, dynamic_temperature=False, t_min=0.1, t_max=50.0, temperature_gamma=3.0) == pytest.approx(off)
    # adaptive=False: w is fixed_weight for everyone; the threshold and sharpness no longer matter
    cfg = BAHSDConfig(attack="bahsd", adaptive=False, fixed_weight=0.3)
    assert torch.all(BAHSDObjective.from_config(cfg).weight(c) == 0.3)
    off = _loss(student, batch, adaptive=False, dynamic_temperature=False)
    assert _loss(student, batch, adaptive=False, dynamic_temperature=False, threshold=0.95, sharpness=5.0) == pytest.approx(off)
    batch.extras["reliability"] = torch.rand(batch.extras["reliability"].shape, generator=torch.Generator().manual_seed(2))
    assert _loss(student, batch, adaptive=False, dynamic_temperature=False) == pytest.approx(off)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="probe_scales"):
        make_extraction_config({"attack": "bahsd", "probe_scales": [1.5]})
    with pytest.raises(ConfigError, match="infonce_wieght: unknown key"):
        make_extraction_config({"attack": "bahsd", "infonce_wieght": 0.1})
    with pytest.raises(ConfigError, match="t_max"):
        make_extraction_config({"attack": "bahsd", "t_min": 3.0, "t_max": 1.0})
    cfg = make_extraction_config({"attack": "bahsd", "probing": False, "probe_scales": [1.5]})  # probing off: not used
    assert isinstance(cfg, BAHSDConfig) and BAHSDConfig.model_validate_json(cfg.model_dump_json()) == cfg


# ----------------------------------------------------------------------------- end to end
WALK_ITEMS, WALK_USERS, WALK_LEN = 30, 50, 10


@pytest.fixture(scope="module")
def walk_target():
    """A small SASRec trained on deterministic walks (item_t = start + step·t mod N): its answers
    depend on the sequence, so copying it takes more than popularity."""
    from raysteal.data.interactions import Interactions

    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 25, WALK_USERS)
    starts, steps = rng.integers(0, WALK_ITEMS, WALK_USERS), 1 + np.arange(WALK_USERS) % 3
    users = np.repeat(np.arange(WALK_USERS), lengths)
    pos = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = (starts[users] + steps[users] * pos) % WALK_ITEMS
    log = Interactions(users=users, items=items, num_users=WALK_USERS, num_items=WALK_ITEMS, name="walks")
    target = seeded_model({"model": "sasrec", "max_len": WALK_LEN, "embedding_dim": 16, "dropout": 0.0}, WALK_USERS, WALK_ITEMS, seed=0)
    opt = torch.optim.AdamW(target.parameters(), lr=1e-2)
    sampler, gen = target.make_sampler(log, 16), torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()  # module fixtures run before the autouse one-thread fixture
    torch.set_num_threads(1)
    target.train()
    for _ in range(20):
        for batch in sampler.epoch(gen):
            loss = target.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    target.eval()
    torch.set_num_threads(threads)
    test = np.full((WALK_USERS, WALK_LEN), -1, dtype=np.int64)
    for u in range(WALK_USERS):
        seq = items[users == u][-WALK_LEN:]
        test[u, WALK_LEN - len(seq) :] = seq
    oracle = in_process_oracle(TargetSpec(model=target), device="cpu")
    yield oracle, test
    oracle.close()


def _run(oracle, name: str, budget: int, knowledge=None, *, workdir=None, on_epoch=None, **overrides):
    from raysteal.extraction.result import run_extraction
    from raysteal.extraction.types import SequenceKnowledge

    client = oracle.register_attacker(name, budget=budget)
    cfg = {
        "attack": "bahsd",
        "k": 10,
        "epochs": 20,
        "batch_size": 32,
        "lr": 3e-3,
        "num_negatives": 10,
        "budget_queries": budget,
        "max_len": WALK_LEN,
        "student": {"model": "sasrec", "embedding_dim": 16},
        **overrides,
    }
    knowledge = knowledge or SequenceKnowledge(num_items=WALK_ITEMS, max_len=WALK_LEN)
    return run_extraction(cfg, knowledge, client, seed=0, workdir=workdir, on_epoch=on_epoch), client


def test_bahsd_end_to_end_beats_a_random_student_within_budget(walk_target):
    from raysteal.extraction.evaluate import student_lists
    from raysteal.metrics import agreement_at

    oracle, test = walk_target
    teacher = oracle.register_attacker("teacher-view").query(test, 10)
    result, client = _run(oracle, "bahsd-e2e", 1200)
    info = result.info
    assert client.spent == result.queries == info["queries_sequences"] + info["queries_probes"] <= 1200
    assert info["queries_probes"] > 0 and info["probed_prefixes"] > 0 and 0.0 <= info["reliability_mean"] <= 1.0
    assert 0.0 <= info["high_confidence_share"] <= 1.0 and info["epochs_run"] == 20
    random_student = seeded_model({"model": "sasrec", "max_len": WALK_LEN, "embedding_dim": 16}, 0, WALK_ITEMS, seed=5).eval()
    random_agr = float(np.nanmean(agreement_at(teacher, student_lists(random_student, test, 10), 10)))
    agr = float(np.nanmean(agreement_at(teacher, student_lists(result.clone, test, 10), 10)))
    assert agr > random_agr + 0.15, (agr, random_agr)


def test_probing_off_spends_nothing_on_probes_and_real_sequences_work(walk_target):
    from raysteal.extraction.types import SequenceKnowledge

    oracle, test = walk_target
    result, client = _run(oracle, "bahsd-noprobe", 300, epochs=1, probing=False)
    assert result.info["queries_probes"] == 0 and result.info["probed_prefixes"] == 0
    assert client.spent == result.info["queries_sequences"] == 300  # the whole budget went to sequences
    assert result.info["reliability_mean"] == pytest.approx(0.5)
    # real sequences: labelling and probes share the budget, which is never exceeded
    knowledge = SequenceKnowledge(num_items=WALK_ITEMS, max_len=WALK_LEN, sequences=test)
    result, client = _run(oracle, "bahsd-real", 200, knowledge=knowledge, epochs=1, source="real")
    assert client.spent == result.queries <= 200 and result.info["queries_probes"] > 0
    assert result.info["sequences"] == len(test) and result.info["source"] == "real"
    with pytest.raises(ConfigError, match="knowledge.sequences"):
        _run(oracle, "bahsd-nodata", 100, epochs=1, source="real")


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_a_zero_budget_is_refused_before_any_query(walk_target, source):
    from raysteal.extraction.result import run_extraction
    from raysteal.extraction.types import SequenceKnowledge

    oracle, test = walk_target
    free = oracle.register_attacker(f"bahsd-zero-{source}")  # no limit of its own: only the config's 0 binds
    knowledge = SequenceKnowledge(num_items=WALK_ITEMS, max_len=WALK_LEN, sequences=test)
    config = {
        "attack": "bahsd",
        "k": 10,
        "epochs": 1,
        "budget_queries": 0,
        "source": source,
        "student": {"model": "sasrec", "embedding_dim": 16},
    }
    with pytest.raises(ConfigError, match="budget"):
        run_extraction(config, knowledge, free, seed=0)
    assert free.spent == 0


@pytest.mark.parametrize("budget", [1, 2, 5, 13])
def test_tiny_budgets_are_never_overspent(walk_target, budget):
    from raysteal.extraction.result import run_extraction
    from raysteal.extraction.types import SequenceKnowledge

    oracle, _ = walk_target
    free = oracle.register_attacker(f"bahsd-tiny-{budget}")
    config = {
        "attack": "bahsd",
        "k": 10,
        "epochs": 0,
        "budget_queries": budget,
        "max_len": WALK_LEN,
        "student": {"model": "sasrec", "embedding_dim": 16},
    }
    result = run_extraction(config, SequenceKnowledge(num_items=WALK_ITEMS, max_len=WALK_LEN), free, seed=0)
    assert free.spent == result.queries <= budget and result.info["queries_sequences"] >= 1


class _Died(Exception):
    """Stands for the process dying in the middle of a run."""


@pytest.mark.parametrize("attack", ["dfme", "bahsd"])
def test_a_run_that_died_resumes_from_its_directory_without_querying_again(walk_target, tmp_path, attack):
    oracle, _ = walk_target

    def weights(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    def die_in_epoch_3(epoch, stats):
        if epoch == 3:
            raise _Died

    whole, _ = _run(oracle, f"{attack}-whole", 600, attack=attack, epochs=4)
    with pytest.raises(_Died):
        _run(oracle, f"{attack}-first", 600, attack=attack, epochs=4, workdir=tmp_path, on_epoch=die_in_epoch_3)
    assert {p.name for p in tmp_path.iterdir()} == {"extraction.npz", "student.state"}
    resumed, retry = _run(oracle, f"{attack}-retry", 600, attack=attack, epochs=4, workdir=tmp_path)
    assert retry.spent == 0 and resumed.queries == whole.queries > 0  # the answers were paid for once
    assert resumed.info["data_reused"] and not whole.info["data_reused"] and resumed.info["resumed_epoch"] == 2
    assert torch.equal(weights(resumed.clone), weights(whole.clone))  # ends where an uninterrupted run does
    assert [h["loss"] for h in resumed.info["history"]] == [h["loss"] for h in whole.info["history"]]
    with pytest.raises(ConfigError, match="another run"):  # the directory of a run with other settings
        _run(oracle, f"{attack}-other", 600, attack=attack, epochs=4, lr=1e-3, workdir=tmp_path)


def test_the_student_state_names_the_objective(tmp_path):
    from raysteal.extraction.student import dfme_objective, train_student

    rng = np.random.default_rng(0)
    data = ExtractionSet(rng.integers(0, 20, (8, 5)), rng.integers(0, 20, (8, 5, 4)).astype(np.int32), 40)
    options = {"epochs": 1, "batch_size": 4, "lr": 1e-2, "num_negatives": 3, "state_path": tmp_path / "s.state"}
    config = {"model": "sasrec", "embedding_dim": 8, "max_len": 5}
    train_student(seeded_model(config, 0, 20, seed=1), data, dfme_objective(0.5), **options)
    with pytest.raises(ConfigError, match="another run"):  # same data and optimiser, another margin
        train_student(seeded_model(config, 0, 20, seed=1), data, dfme_objective(0.3), **{**options, "epochs": 2})
    with pytest.raises(ConfigError, match="another run"):  # another gradient clipping
        train_student(seeded_model(config, 0, 20, seed=1), data, dfme_objective(0.5), **{**options, "grad_clip": 1.0})
    with pytest.warns(RuntimeWarning, match="starts afresh"):  # a run directory's own state: trained again
        fresh = train_student(
            seeded_model(config, 0, 20, seed=1), data, dfme_objective(0.3), restart_if_unusable=True, **{**options, "epochs": 2}
        )
    assert fresh["resumed_epoch"] == 0 and fresh["epochs_run"] == 2
    bahsd = BAHSDObjective.from_config(BAHSDConfig(epochs=3))
    assert repr(bahsd) == repr(BAHSDObjective.from_config(BAHSDConfig(epochs=9)))  # more epochs: still resumable
    assert repr(bahsd) != repr(BAHSDObjective.from_config(BAHSDConfig(epochs=3, margin=0.2)))


# ------------------------------------------------------------------ probes that teach
def test_probe_answer_extras_lay_each_view_at_its_sequence():
    from raysteal.extraction.probing import probe_answer_extras

    width, k = 4, 3
    views = np.array([[-1, -1, 5, 6], [-1, -1, -1, 6], [-1, 1, 2, 3]])
    answers = np.array([[7, 8, 9], [8, 7, -1], [4, 0, 9]])
    rows, cols, prefix, slot = np.array([2, 2, 0]), np.array([3, 3, 2]), np.array([1, 1, 0]), np.array([0, 1, 0])
    full = np.array([[7, 9, 8], [7, 9, 8], [4, 9, 0]])
    items = np.array([[-1, 4, 5, 6], [-1, 4, 5, 6], [-1, 1, 2, 3]])
    out = probe_answer_extras(3, width, k, views, answers, rows, cols, prefix, slot, np.array([0.9, 0.4, 1.0]), full, items, 2)
    assert out["probe_views"].shape == (3, 2, width) and out["probe_lists"].shape == (3, 2, k)
    assert out["probe_views"][2].tolist() == [[-1, -1, 5, 6], [-1, -1, -1, 6]]
    assert out["probe_lists"][2].tolist() == [[7, 8, 9], [8, 7, -1]] and out["probe_col"][2].tolist() == [3, 3]
    assert out["probe_lists"][0, 0].tolist() == [4, 0, 9] and out["probe_lists"][0, 1, 0] == -1
    assert (out["probe_lists"][1] == -1).all() and (out["probe_col"][1] == -1).all()
    assert out["probe_agree"][2].tolist() == pytest.approx([0.9, 0.4])
    # view (2, slot 0) answers [7, 8, 9]; the other lists of its prefix: full [7, 9, 8] and view 1 [8, 7] (depth 2)
    # item 7: in both -> 1; 8: full yes, view 1 yes -> 1; 9 (rank 2): only the full list reaches rank 2 -> 1
    assert out["probe_stability"][2, 0].tolist() == pytest.approx([1.0, 1.0, 1.0])
    # view (2, slot 1) answers [8, 7]; the other lists: full [7, 9, 8] and view 0 [7, 8, 9] -> both hold 8 and 7
    assert out["probe_stability"][2, 1].tolist() == pytest.approx([1.0, 1.0, 0.0])
    # the only view of sequence 0: full list [4, 9, 0] holds 4 and 0 and 9; nothing else speaks
    assert out["probe_stability"][0, 0].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_view_stability_counts_only_the_other_answers():
    from raysteal.extraction.probing import view_stability

    answers = np.array([[1, 2, 3], [3, 4, -1]])
    full = np.array([[1, 5, 6], [1, 5, 6]])
    items = np.full((2, 2), -1)
    got = view_stability(answers, full, items, np.array([0, 0]), np.array([0, 1]), 2)
    # view 0 [1, 2, 3]: full [1, 5, 6] (depth 3) and view 1 [3, 4] (depth 2): 1 -> 1/2, 2 -> 0/2, 3 -> 0/1
    assert got[0].tolist() == pytest.approx([0.5, 0.0, 0.0])
    # view 1 [3, 4]: full -> 0, view 0 [1, 2, 3] -> 3 yes at depth 3; 4 no
    assert got[1].tolist() == pytest.approx([0.5, 0.0, 0.0])


def _batch_with_views(seed: int = 3):
    """The probed batch of :func:`_probed_batch` with two probe views per sequence (suffixes of its
    last prefix) whose answers are random lists."""
    student, batch = _probed_batch(seed)
    rng = np.random.default_rng(seed + 1)
    n, lead = batch.inputs.shape[0], 2
    full_width = batch.extras["reliability"].shape[1]
    inputs = batch.inputs.numpy()
    views = np.full((n, 2, full_width), -1, dtype=np.int32)
    cols = np.full((n, 2), -1, dtype=np.int64)
    for r in range(n):
        items = inputs[r][inputs[r] >= 0]
        for v, length in enumerate((max(1, len(items) // 2), 1)):
            views[r, v, full_width - length :] = items[-length:]
            cols[r, v] = inputs.shape[1] - 1 + lead
    # the black box never lists an input's own items
    unseen = [np.setdiff1d(np.arange(NUM_ITEMS), inputs[r]) for r in range(n)]
    lists = np.stack([[rng.choice(unseen[r], K, replace=False) for _ in range(2)] for r in range(n)]).astype(np.int32)
    lists[0, 1] = -1  # sequence 0 has one view only
    batch.extras.update(
        {
            "probe_views": torch.as_tensor(views),
            "probe_lists": torch.as_tensor(lists),
            "probe_col": torch.as_tensor(cols),
            "probe_agree": torch.as_tensor(rng.random((n, 2)).astype(np.float32)),
            "probe_stability": torch.as_tensor(rng.random((n, 2, K)).astype(np.float32)),
            "probe_reliability": torch.as_tensor(rng.random((n, 2)).astype(np.float32)),
        }
    )
    return student, batch


def test_probe_answers_train_only_when_switched_on():
    student, batch = _batch_with_views()
    plain = {key: value for key, value in batch.extras.items() if not key.startswith("probe_")}
    bare = StudentBatch(batch.sequence_ids, batch.inputs, batch.rows, batch.cols, batch.lists, batch.negatives, plain)
    torch.manual_seed(0)
    off = _loss(student, batch, probe_training=False)
    assert off == pytest.approx(_loss(student, bare))  # switched off: the probe answers are not read
    torch.manual_seed(0)
    on = _loss(student, batch)
    assert math.isfinite(on) and on != pytest.approx(off)
    # the views' share is L_views times probe_weight, added to the prefixes' loss
    torch.manual_seed(0)
    double = _loss(student, batch, probe_weight=2.0)
    assert double - off == pytest.approx(2.0 * (on - off), rel=1e-4)
    # other answers, other loss: the answers are the targets
    batch.extras["probe_lists"] = torch.flip(batch.extras["probe_lists"], dims=[2])
    torch.manual_seed(0)
    assert _loss(student, batch) != pytest.approx(on)


def test_view_infonce_is_agreement_weighted_infonce_with_the_prefix():
    from raysteal.extraction.bahsd_losses import info_nce

    student, batch = _batch_with_views()
    objective = BAHSDObjective.from_config(BAHSDConfig(attack="bahsd"))
    hidden = torch.randn(batch.rows.numel(), 8, generator=torch.Generator().manual_seed(1))
    b, v = torch.nonzero(batch.extras["probe_lists"][..., 0] >= 0, as_tuple=True)
    views = torch.randn(b.numel(), 8, generator=torch.Generator().manual_seed(2))
    lead = batch.extras["reliability"].shape[1] - batch.inputs.shape[1]
    owner_cols = batch.extras["probe_col"][b, v] - lead
    agree = batch.extras["probe_agree"][b, v]
    got = objective.view_contrast(batch, hidden, views, b, owner_cols, agree)
    # by hand: each view's prefix is its sequence's last column, selected once per sequence
    position = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(batch.rows, batch.cols))}
    owner = torch.tensor([position[(int(r), int(c))] for r, c in zip(b, owner_cols)])
    expected = agree * info_nce(views, hidden[owner], 0.2, groups=b)
    assert got.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    # views and prefixes of one sequence are not each other's negatives: grouping by prefix differs
    assert len(set(owner.tolist())) < len(owner)
    assert got.tolist() != pytest.approx((agree * info_nce(views, hidden[owner], 0.2, groups=None)).tolist(), rel=1e-5)


def test_probe_training_spends_no_extra_queries_and_trains_on_the_views(walk_target):
    oracle, _ = walk_target
    on, client_on = _run(oracle, "bahsd-teach-on", 400, epochs=1)
    off, client_off = _run(oracle, "bahsd-teach-off", 400, epochs=1, probe_training=False)
    assert client_on.spent == client_off.spent == on.queries == off.queries  # charged once, by the probes
    assert on.info["queries_probes"] == off.info["queries_probes"] > 0
    assert on.info["probe_answers_trainable"] == on.info["queries_probes"]  # every probe answer is a training example
    assert off.info["probe_answers_trainable"] == 0
    assert "probe_kl" in on.info["history"][0] and "probe_kl" not in off.info["history"][0]


def test_baselines_use_exactly_the_sequences_and_queries_of_bahsd_without_probes(walk_target, tmp_path):
    from raysteal.extraction.resume import DATA_FILE
    from raysteal.extraction.student import DFMEObjective
    from raysteal.extraction.types import SequenceKnowledge

    oracle, test = walk_target
    knowledge = SequenceKnowledge(num_items=WALK_ITEMS, max_len=WALK_LEN, sequences=test)
    saved = {}
    runs = (
        ("plain", {"probing": False}),
        ("ranking", {"baseline": "ranking"}),
        ("kl", {"baseline": "kl"}),
        ("listwise", {"baseline": "listwise"}),
    )
    for name, extra in runs:
        result, client = _run(
            oracle, f"bahsd-base-{name}", 150, knowledge=knowledge, epochs=1, source="real", workdir=tmp_path / name, **extra
        )
        assert client.spent == result.queries == 150 and result.info["queries_probes"] == 0
        with np.load(tmp_path / name / DATA_FILE) as data:
            saved[name] = (data["sequences"].copy(), data["lists"].copy())
    for name in ("ranking", "kl", "listwise"):
        assert np.array_equal(saved[name][0], saved["plain"][0]) and np.array_equal(saved[name][1], saved["plain"][1])
    ranking = BAHSDConfig(attack="bahsd", baseline="ranking", margin=0.3)
    assert ranking.objective(0.5) == DFMEObjective(0.3)  # Yue et al.'s loss, exactly
    assert not ranking.probes and ranking.row_labels() == {"setting": "synthetic", "baseline": True, "variant": "ranking-for-all"}
    kl = BAHSDConfig(attack="bahsd", baseline="kl", source="real", variant="kl-T2").objective(0.5)
    c = torch.linspace(0, 1, 5)
    assert torch.all(kl.weight(c) == 1.0) and torch.all(kl.temperature(c) == 2.0)  # the KL branch for every prefix
    assert BAHSDConfig(attack="bahsd", source="real").row_labels() == {"setting": "real", "baseline": False, "variant": "defaults"}


def test_the_listwise_baseline_is_unweighted_listmle_for_every_prefix_and_skips_the_kl():
    from raysteal.extraction.student import student_hidden

    config = BAHSDConfig(attack="bahsd", baseline="listwise", infonce=True, probe_training=True, adaptive=True)
    assert not config.probes and config.row_labels()["variant"] == "listwise-for-all" and config.row_labels()["baseline"] is True
    objective = config.objective(0.5)
    assert objective.kl_weighs_nothing and objective.config.rank_loss == "listwise"
    student, batch = _batch_with_views()
    torch.manual_seed(0)
    loss, logs = objective(student.eval(), batch)
    # by hand: the mean over the batch's prefixes of ListMLE with every item weighing 1
    scores = student.logits(student_hidden(student, batch)).float()
    lists, negatives = batch.lists.long(), batch.negatives.long()
    expected = listwise_consistency(
        scores.gather(1, lists.clamp(min=0)), scores.gather(1, negatives.clamp(min=0)), lists >= 0, torch.ones(lists.shape), negatives >= 0
    ).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert float(logs["w"]) == 0.0 and float(logs["kl"]) == 0.0 and "probe_kl" not in logs and "infonce" not in logs


def test_probe_view_sets_can_be_written_as_text():
    cfg = BAHSDConfig(attack="bahsd", probe_scales="0.75, 0.5,0.25", probe_dropout="")
    assert cfg.probe_scales == [0.75, 0.5, 0.25] and cfg.probe_dropout == []
    with pytest.raises(ValueError, match="numbers separated by commas"):
        BAHSDConfig(attack="bahsd", probe_scales="half")


def test_the_kl_never_masks_an_item_the_list_holds():
    """Popular mixing may list an item the input holds; the prefix-item mask must not make the KL
    infinite (BAHSD diverged under popular mixing: the attack x defense matrix on ML-100K)."""
    torch.manual_seed(0)
    scores = torch.randn(2, 6)
    lists = torch.tensor([[3, 1, -1], [0, 2, 5]])
    exclude = torch.zeros(2, 6, dtype=torch.bool)
    exclude[0, 3] = exclude[0, 4] = exclude[1, 0] = True  # 3 and 0 are listed, 4 is not
    kl = kl_rank_distillation(scores, lists, torch.tensor(1.0), exclude=exclude)
    assert torch.isfinite(kl).all()
    only_unlisted = torch.zeros_like(exclude)
    only_unlisted[0, 4] = True
    assert torch.allclose(kl, kl_rank_distillation(scores, lists, torch.tensor(1.0), exclude=only_unlisted))
    # no listed item excluded (an undefended black box): the mask acts as before
    plain = torch.zeros_like(exclude)
    plain[0, 4] = plain[1, 1] = True
    logits = scores.masked_fill(plain, float("-inf"))
    p = rank_soft_targets(lists, torch.tensor(1.0).expand(2))
    log_q = torch.log_softmax(logits, 1).gather(1, lists.clamp(min=0))
    expected = torch.where(lists >= 0, p * (torch.log(p.clamp(min=1e-30)) - log_q), torch.zeros_like(p)).sum(1)
    assert torch.allclose(kl_rank_distillation(scores, lists, torch.tensor(1.0), exclude=plain), expected)


def _previous_represent_last(student, indices):
    """The views' states as the objective took them before: the whole encoder output, its last column."""
    from raysteal.models.sequence_layers import last_positions

    rows, cols = last_positions(indices)
    return student.represent(indices, rows, cols)


@pytest.mark.parametrize("dropout", [False, True])
def test_the_views_last_column_pass_gives_the_previous_loss_gradients_and_draws(dropout):
    """The InfoNCE and probe views' encoder passes run the last block for the last column only
    (``SASRec.represent_last``): against the previous code, the same loss, the same dropout
    draws (the generator ends where it did), gradients to float rounding (fewer rows summed)."""
    student, batch = _batch_with_views()
    student.train(dropout)
    objective = BAHSDObjective.from_config(BAHSDConfig(attack="bahsd", probe_infonce=True))

    def run(previous: bool):
        student.zero_grad(set_to_none=True)
        if previous:
            student.represent_last = lambda indices: _previous_represent_last(student, indices)
        torch.manual_seed(5)
        try:
            loss, _ = objective(student, batch)
        finally:
            if previous:
                del student.represent_last
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in student.parameters()], torch.rand(8)

    (old_loss, old_grads, old_next), (new_loss, new_grads, new_next) = run(True), run(False)
    assert torch.equal(old_loss, new_loss)
    assert torch.equal(old_next, new_next)
    for old, new in zip(old_grads, new_grads):
        assert torch.allclose(new, old, rtol=0.0, atol=1e-6 * float(old.abs().max()))
    assert any(float(g.abs().max()) > 0 for g in new_grads)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_encoder_last_is_the_last_column_of_forward_with_the_same_draws(pre_norm):
    from raysteal.models.sequence_layers import TransformerEncoder

    torch.manual_seed(0)
    encoder = TransformerEncoder(30, 8, 12, 2, 2, 0.3, causal=pre_norm, pre_norm=pre_norm, activation="relu", ffn_dim=16).train()
    indices = torch.randint(1, 31, (5, 12))
    indices[1, :4] = 0  # left padding
    torch.manual_seed(3)
    full, after_full = encoder(indices)[:, -1], torch.rand(4)
    torch.manual_seed(3)
    last, after_last = encoder.last(indices), torch.rand(4)
    assert torch.allclose(last, full, rtol=0.0, atol=1e-6) and torch.equal(after_last, after_full)
    encoder.eval()
    assert torch.allclose(encoder.last(indices), encoder(indices)[:, -1], rtol=0.0, atol=1e-6)
