"""Collaborative models (BPR-MF, LMF, NeuMF), their pair sampler, and config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import raysteal.models.neumf as neumf_module
from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError, UnknownNameError
from raysteal.models import build_model, make_config, model_class, model_names
from raysteal.models.pair_samplers import PairSampler, hardest_candidates, is_seen, seen_keys, uniform_negatives
from tests.model_fixtures import toy_log

COLLAB = ["bpr", "lmf", "neumf"]


def test_all_collaborative_models_registered():
    assert set(COLLAB) <= set(model_names())
    assert model_class("ncf") is model_class("neumf")
    assert make_config({"model": "ncf"}).model == "neumf"
    assert all(not model_class(n).sequential for n in COLLAB)


def test_a_model_is_one_registered_class_in_one_module():
    """Every ``Recommender`` a module of the package defines is registered by its own decorator
    (the package imports its modules: no list to edit), and its aliases with it."""
    import importlib
    import pkgutil

    import raysteal.models
    from raysteal.models.base import Recommender

    defined = {
        cls
        for info in pkgutil.iter_modules(raysteal.models.__path__)
        for cls in vars(importlib.import_module(f"raysteal.models.{info.name}")).values()
        if isinstance(cls, type) and issubclass(cls, Recommender) and "name" in vars(cls)
    }
    assert {cls.name for cls in defined} == set(model_names())
    assert all(model_class(alias) is cls for cls in defined for alias in cls.aliases)
    assert model_names() == sorted(model_names())


@pytest.mark.parametrize("name", COLLAB)
def test_score_shape_and_dtype(name):
    model = build_model({"model": name, "embedding_dim": 8}, num_users=7, num_items=13)
    scores = model.score(torch.tensor([0, 6, 3]))
    assert scores.shape == (3, 13)
    assert scores.dtype == torch.float32
    assert torch.isfinite(scores).all()


def test_bpr_score_is_dot_product_and_loss_matches_rendle():
    model = build_model({"model": "bpr", "embedding_dim": 4, "reg": 0.1}, num_users=3, num_items=5)
    u, i, j = model.user_emb.weight, model.item_emb.weight, model.item_emb.weight
    assert torch.allclose(model.score(torch.tensor([1])), (u[1] @ i.T)[None])
    batch = {"users": torch.tensor([1, 2]), "pos": torch.tensor([0, 3]), "neg": torch.tensor([[4], [1]]), "count": torch.ones(2)}
    x = torch.stack([u[1] @ i[0] - u[1] @ j[4], u[2] @ i[3] - u[2] @ j[1]])
    reg = (u[[1, 2]].pow(2).sum() + i[[0, 3]].pow(2).sum() + j[[4, 1]].pow(2).sum()) / 2
    expected = -F.logsigmoid(x).mean() + 0.1 * reg
    assert torch.allclose(model.loss(batch), expected)


def test_hardest_candidates_picks_each_groups_best_column():
    scores = torch.tensor([[0.1, 0.9, 0.3, 5.0, -1.0, 2.0], [3.0, 2.0, 1.0, 0.0, 0.0, 0.5]])
    assert hardest_candidates(scores, 3).tolist() == [[1, 3], [0, 5]]
    assert hardest_candidates(scores, 1).tolist() == [list(range(6))] * 2


@pytest.mark.parametrize("name", COLLAB)
def test_dynamic_negative_sampling_trains_on_each_groups_highest_scored_draw(name):
    """DNS (Zhang et al. 2013): with 3 draws per negative the loss is the plain loss on each
    group's highest-scored draw; the gradient reaches the chosen items and not the others."""
    config = {"model": name, "embedding_dim": 4, "num_negatives": 2, "init_std": 0.5}
    model = build_model({**config, "negative_candidates": 3}, num_users=3, num_items=9)
    plain = build_model(config, num_users=3, num_items=9)
    plain.load_state_dict(model.state_dict())
    draws = torch.tensor([[1, 4, 5, 6, 7, 8]])
    scores = plain.score(torch.tensor([2]))[0].detach()
    groups = draws.view(2, 3)
    chosen = groups.gather(1, scores[groups].argmax(1, keepdim=True)).view(1, 2)
    batch = {"users": torch.tensor([2]), "pos": torch.tensor([0]), "neg": draws, "count": torch.ones(1)}
    loss = model.loss(batch)
    assert torch.allclose(loss, plain.loss({**batch, "neg": chosen}), atol=1e-6)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and p.shape[0] == 9}
    touched = {int(i) for g in grads.values() for i in torch.nonzero(g.abs().sum(-1)).view(-1)}
    assert set(chosen.view(-1).tolist()) <= touched
    assert not touched & (set(draws.view(-1).tolist()) - set(chosen.view(-1).tolist()))
    assert model.make_sampler(toy_log(), 4).num_negatives == 6


def test_lmf_score_has_biases_and_confidence_weighted_likelihood():
    model = build_model({"model": "lmf", "embedding_dim": 4, "alpha": 2.0, "reg": 0.0}, num_users=3, num_items=5)
    with torch.no_grad():
        model.user_bias.weight[:] = torch.tensor([[0.5], [-1.0], [0.0]])
        model.item_bias.weight[:] = torch.arange(5.0)[:, None]
    x, y = model.user_emb.weight, model.item_emb.weight
    expected_scores = x @ y.T + model.user_bias.weight + model.item_bias.weight.T
    assert torch.allclose(model.score(torch.arange(3)), expected_scores)
    batch = {"users": torch.tensor([0]), "pos": torch.tensor([2]), "neg": torch.tensor([[1, 4]]), "count": torch.tensor([3.0])}
    s = expected_scores[0].detach()
    # Johnson Eq. 3 with sampled negatives: -[α r log σ(s_pos)] - Σ_neg log(1 - σ(s_neg))
    expected = -(2.0 * 3.0 * math.log(torch.sigmoid(s[2]))) - math.log(1 - torch.sigmoid(s[1])) - math.log(1 - torch.sigmoid(s[4]))
    assert model.loss(batch).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("chunk", [1 << 24, 7])
def test_neumf_chunked_full_scores_match_pairwise_forward(monkeypatch, chunk):
    monkeypatch.setattr(neumf_module, "_SCORE_CHUNK_ELEMENTS", chunk)
    model = build_model({"model": "neumf", "embedding_dim": 4, "init_std": 0.5}, num_users=5, num_items=11)
    users = torch.tensor([4, 0, 2])
    full = model.score(users)
    items = torch.arange(11)
    pairwise = model._logits(users[:, None].expand(3, 11), items[None, :].expand(3, 11))
    assert torch.allclose(full, pairwise, atol=1e-5)
    assert [layer.out_features for layer in model.tower] == [16, 8, 4]  # He et al.'s (4f, 2f, f)


def test_neumf_loss_is_pointwise_bce_with_negatives():
    model = build_model({"model": "neumf", "embedding_dim": 4, "num_negatives": 2}, num_users=3, num_items=6)
    batch = {"users": torch.tensor([1]), "pos": torch.tensor([2]), "neg": torch.tensor([[0, 5]]), "count": torch.ones(1)}
    s = model.score(torch.tensor([1]))[0]
    expected = (F.softplus(-s[2]) + F.softplus(s[0]) + F.softplus(s[5])) / 3
    assert model.loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)


def test_pair_sampler_visits_every_positive_once_with_unseen_negatives():
    log = toy_log()
    sampler = PairSampler(log, batch_size=64, num_negatives=3)
    batches = list(sampler.epoch(torch.Generator().manual_seed(1)))
    assert len(batches) == len(sampler) == math.ceil(log.num_interactions / 64)
    users = torch.cat([b["users"] for b in batches]).numpy()
    pos = torch.cat([b["pos"] for b in batches]).numpy()
    neg = torch.cat([b["neg"] for b in batches])
    assert neg.shape == (log.num_interactions, 3)
    got = np.sort(users * log.num_items + pos)
    assert np.array_equal(got, np.sort(log.users * log.num_items + log.items))
    keys = seen_keys(log)
    assert not is_seen(keys, torch.from_numpy(users)[:, None], neg, log.num_items).any()
    again = list(sampler.epoch(torch.Generator().manual_seed(1)))
    assert all(torch.equal(a["neg"], b["neg"]) for a, b in zip(batches, again))


def test_uniform_negatives_without_rejection_and_counts():
    g = torch.Generator().manual_seed(0)
    neg = uniform_negatives(torch.zeros(1000, dtype=torch.int64), 2, 5, g)
    assert neg.shape == (1000, 2) and neg.min() >= 0 and neg.max() <= 4
    assert len(torch.unique(neg)) == 5
    dup = Interactions(np.array([0, 0, 0, 1]), np.array([2, 2, 1, 0]), 2, 4)
    batch = next(PairSampler(dup, batch_size=4).epoch(torch.Generator().manual_seed(0)))
    counts = {(int(u), int(i)): float(c) for u, i, c in zip(batch["users"], batch["pos"], batch["count"])}
    assert counts == {(0, 2): 2.0, (0, 1): 1.0, (1, 0): 1.0}


def test_bad_configs_raise_clear_errors():
    with pytest.raises(UnknownNameError, match="nosuchmodel"):
        build_model({"model": "nosuchmodel"}, 3, 3)
    with pytest.raises(ConfigError, match="embedding_dim"):
        build_model({"model": "bpr", "embedding_dim": -4}, 3, 3)
    with pytest.raises(ConfigError, match="embeding_dim"):
        build_model({"model": "lmf", "embeding_dim": 8}, 3, 3)
    with pytest.raises(ConfigError, match="mlp_layers"):
        build_model({"model": "neumf", "mlp_layers": [8, 0]}, 3, 3)
    with pytest.raises(ConfigError, match="num_negatives"):
        build_model({"model": "neumf", "num_negatives": 0}, 3, 3)
    with pytest.raises(ConfigError, match="model"):
        make_config({"embedding_dim": 8})
    with pytest.raises(ConfigError, match="batch_size"):
        PairSampler(toy_log(), batch_size=0)


@pytest.mark.parametrize("name", COLLAB)
def test_config_round_trips_through_json(name):
    cfg = make_config({"model": name, "embedding_dim": 12})
    again = make_config(__import__("json").loads(cfg.model_dump_json()))
    assert again == cfg


@pytest.mark.parametrize("bitmap", [True, False])
def test_seen_pairs_answers_as_the_sorted_key_search_does(monkeypatch, bitmap):
    """The bitmap and the binary-search fallback (a grid over BITMAP_MAX_PAIRS) give the answers
    of the sorted-key search, out-of-grid queries (negative ids, users past the log) included."""
    import raysteal.models.pair_samplers as samplers

    if not bitmap:
        monkeypatch.setattr(samplers, "BITMAP_MAX_PAIRS", 10)
    log = toy_log()
    keys = seen_keys(log)
    seen = samplers.SeenPairs(keys, log.num_items)
    assert (seen.bits is not None) == bitmap
    g = torch.Generator().manual_seed(3)
    users = torch.randint(-1, log.num_users + 2, (5000,), generator=g)
    items = torch.randint(-1, log.num_items + 1, (5000,), generator=g)
    want = is_seen(keys, users, items, log.num_items)
    assert want.any() and torch.equal(seen.contains(users, items), want)
    held_users, held_items = torch.from_numpy(log.users), torch.from_numpy(log.items)
    assert seen.contains(held_users, held_items).all()
    assert torch.equal(
        seen.contains(held_users[:, None], held_items[None, :20]), is_seen(keys, held_users[:, None], held_items[None, :20], log.num_items)
    )
    empty = samplers.SeenPairs(torch.zeros(0, dtype=torch.int64), log.num_items)
    assert not empty.contains(users, items).any()


def test_pair_scores_equal_the_einsum_it_replaces():
    from raysteal.models.pair_samplers import pair_scores

    g = torch.Generator().manual_seed(0)
    u, j = torch.randn(7, 5, generator=g), torch.randn(7, 3, 5, generator=g)
    assert torch.allclose(pair_scores(u, j), torch.einsum("bd,bnd->bn", u, j), atol=1e-6)
