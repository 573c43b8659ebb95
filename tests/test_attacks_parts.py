"""Parts of the attacks: objectives (Eq. 4, 9–12), clones (Eq. 5–8 fusion, PTA(Pre), frozen
auxiliary, popularity), the query strategy and the optimisation loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raysteal.attacks.clones import (
    FusedClone,
    PopularityClone,
    arch_of,
    chunked_scores,
    clone_model_config,
    frozen_aux_clone,
    pair_scores,
    plain_clone,
    popularity_counts,
    pretrained_clone,
)
from raysteal.attacks.fitting import ListSampler
from raysteal.attacks.objectives import bpr_loss, data_loss, hinge_loss, stealing_loss
from raysteal.data.interactions import Interactions
from raysteal.errors import ConfigError
from raysteal.training.loop import optimize


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------- objectives
def _one_user_clone() -> torch.nn.Module:
    """A 1-d BPR clone with r = (1.0, 0.8, 0.6) for its single user over 3 items."""
    model = plain_clone(clone_model_config("bpr", 1), 1, 3, seed=0)
    with torch.no_grad():
        model.user_emb.weight.fill_(1.0)
        model.item_emb.weight.copy_(torch.tensor([[1.0], [0.8], [0.6]]))
    return model


@pytest.mark.parametrize(
    "rank, item, expected",
    [
        # list (0, 1), negative 2 for each list item; r0 - r1 = 0.2, r0 - r2 = 0.4, r1 - r2 = 0.2
        ("hinge", "hinge", 0.3 + (0.1 + 0.3)),
        ("hinge", "bpr", 0.3 + (-math.log(_sig(0.4)) - math.log(_sig(0.2)))),
        ("bpr", "hinge", -math.log(_sig(0.2)) + (0.1 + 0.3)),
        ("bpr", "bpr", -math.log(_sig(0.2)) + (-math.log(_sig(0.4)) - math.log(_sig(0.2)))),
    ],
)
def test_stealing_loss_matches_hand_computed_values(rank, item, expected):
    model = _one_user_clone()
    users = torch.tensor([0])
    scores = pair_scores(model, users, torch.tensor([[0, 1, 2, 2]]))  # list items, then negatives
    loss = stealing_loss(scores[:, :2], scores[:, 2:].reshape(1, 2, 1), rank_loss=rank, item_loss=item, margin=0.5)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_stealing_loss_ignores_padding_and_validates_shapes():
    s = torch.tensor([[1.0, 0.8, 5.0]])
    neg = torch.tensor([[[0.6], [0.6], [9.0]]])
    valid = torch.tensor([[True, True, False]])
    padded = stealing_loss(s, neg, valid, "hinge", "hinge", 0.5)
    assert padded.item() == pytest.approx(0.3 + 0.1 + 0.3)
    with pytest.raises(ConfigError):
        stealing_loss(s, neg[:, :2], valid)


def test_pair_losses_and_data_losses():
    pos, neg = torch.tensor([1.0]), torch.tensor([0.2])
    assert bpr_loss(pos, neg).item() == pytest.approx(-math.log(_sig(0.8)))
    assert hinge_loss(pos, neg, 0.5).item() == 0.0
    assert hinge_loss(pos, neg, 1.0).item() == pytest.approx(0.2)
    logistic = data_loss("logistic", pos, neg[:, None]).item()
    assert logistic == pytest.approx(math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.2)))
    with pytest.raises(ConfigError, match="data loss"):
        data_loss("mse", pos, neg[:, None])


# ----------------------------------------------------------------------------- clones
def _aux_and_base(arch: str, users: int = 5, items: int = 11, dim: int = 4):
    cfg = clone_model_config(arch, dim, {"init_std": 0.5})
    aux = plain_clone(cfg, 7, items, seed=1)
    base = plain_clone(cfg, users, items, seed=2)
    return cfg, aux, base


@pytest.mark.parametrize("arch", ["bpr", "lmf", "neumf"])
def test_fusion_weights_sum_to_one_and_full_scores_match_pair_scores(arch):
    _, aux, base = _aux_and_base(arch)
    clone = FusedClone(base, aux, torch.Generator().manual_seed(0))
    users = torch.arange(5)
    items = torch.arange(11).expand(5, -1)
    with torch.no_grad():
        for table in clone.tables:
            a, b = clone.fusion_weights(table, users, items)
            assert torch.allclose(a + b, torch.ones_like(a))
            assert ((a > 0) & (a < 1)).all()
            assert torch.allclose(clone.clone_weight_full(table, users), a, atol=1e-6)  # closed form of Eq. 5-6
        full = clone.score(users)
        assert torch.allclose(full, clone.pair_scores(users, items), atol=1e-5)
    assert full.shape == (5, 11)


def test_fused_clone_keeps_auxiliary_frozen_and_reaches_both_tables():
    _, aux, base = _aux_and_base("bpr")
    clone = FusedClone(base, aux, torch.Generator().manual_seed(0))
    before = clone.aux_item_emb.clone()
    names = {n for n, p in clone.named_parameters() if p.requires_grad}
    assert names == {"base.user_emb.weight", "base.item_emb.weight", "attn_w.item_emb", "attn_b.item_emb"}
    loss = clone.pair_scores(torch.tensor([0, 1]), torch.tensor([[1, 2], [3, 4]])).sum()
    loss.backward()
    assert clone.attn_w["item_emb"].grad.abs().sum() > 0
    assert torch.equal(clone.aux_item_emb, before)


def test_pretrained_and_frozen_auxiliary_clones():
    cfg, aux, _ = _aux_and_base("lmf")
    pre = pretrained_clone(cfg, aux, 5, seed=3)
    assert torch.equal(pre.item_emb.weight, aux.item_emb.weight) and pre.item_emb.weight.requires_grad
    assert torch.equal(pre.item_bias.weight, aux.item_bias.weight)
    frozen = frozen_aux_clone(cfg, aux, 5, seed=3)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"user_emb.weight", "user_bias.weight"}
    assert torch.equal(frozen.item_emb.weight, aux.item_emb.weight)
    ncf_cfg, ncf_aux, _ = _aux_and_base("neumf")
    ncf = frozen_aux_clone(ncf_cfg, ncf_aux, 5, seed=3)
    assert torch.equal(ncf.tower[0].weight, ncf_aux.tower[0].weight) and not ncf.tower[0].weight.requires_grad


@pytest.mark.parametrize("arch", ["bpr", "lmf", "neumf"])
def test_pair_scores_agree_with_each_models_full_score(arch):
    model = plain_clone(clone_model_config(arch, 4, {"init_std": 0.5}), 3, 9, seed=0)
    users = torch.arange(3)
    with torch.no_grad():
        assert torch.allclose(pair_scores(model, users, torch.arange(9).expand(3, -1)), model.score(users), atol=1e-5)
        assert torch.allclose(chunked_scores(lambda u, i: pair_scores(model, u, i), users, 9, 8), model.score(users), atol=1e-5)


def test_popularity_clone_counts_the_attackers_own_data():
    a = Interactions(np.array([0, 0, 1]), np.array([2, 1, 2]), num_users=2, num_items=4)
    b = Interactions(np.array([0]), np.array([3]), num_users=1, num_items=4)
    pop = popularity_counts(a, None, b)
    assert pop.tolist() == [0, 1, 2, 1]
    clone = PopularityClone(pop, num_users=2)
    assert clone.score(torch.arange(2)).tolist() == [[0, 1, 2, 1]] * 2
    with pytest.raises(ConfigError):
        popularity_counts(None, None)


def test_unknown_clone_architecture_is_a_config_error():
    with pytest.raises(ConfigError, match="sasrec"):
        arch_of("sasrec")


# ----------------------------------------------------------------------------- sampling, loop
def test_list_sampler_negatives_avoid_lists_and_known_items():
    lists = np.array([[0, 1, 2, -1], [3, 4, 5, 6]])
    known = Interactions(np.array([0, 0, 1]), np.array([7, 8, 9]), num_users=2, num_items=12)
    sampler = ListSampler(np.array([0, 1]), lists, 12, users_per_batch=1, num_negatives=8, known=known)
    batches = list(sampler.epoch(torch.Generator().manual_seed(0)))
    assert len(batches) == len(sampler) == 2
    for batch in batches:
        user = int(batch["users"][0])
        banned = set(lists[user][lists[user] >= 0]) | set(known.sequence(user))
        assert batch["neg"].shape == (1, 4, 8)
        assert not banned & set(batch["neg"].flatten().tolist())


def test_optimize_reduces_a_loss_and_is_seeded():
    def run(seed: int) -> tuple[torch.Tensor, list[float]]:
        w = torch.nn.Parameter(torch.zeros(3))
        target = torch.tensor([1.0, -2.0, 0.5])

        def epochs(gen: torch.Generator):
            for _ in range(4):
                yield {"x": torch.randn(8, 3, generator=gen)}

        res = optimize([w], epochs, lambda b: ((b["x"] * (w - target)).sum(1) ** 2).mean(), 30, 0.05, torch.Generator().manual_seed(seed))
        return w.detach(), res.losses

    w1, losses = run(0)
    w2, _ = run(0)
    assert losses[-1] < 0.05 * losses[0]
    assert torch.equal(w1, w2)
    with pytest.raises(ConfigError, match="nothing to optimise"):
        optimize([torch.zeros(2)], lambda g: iter(()), lambda b: b, 1, 0.1, torch.Generator())
