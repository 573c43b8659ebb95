"""GRO as a target training option (raysteal.training.gro; Zhang et al., WSDM 2024): the swap
matrix's gradient in closed form, the swap loss, strength 0 as plain training, the cache key,
the experiment-file and command-line settings and their errors. Tiny synthetic logs, seconds."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from model_fixtures import toy_log
from typer.testing import CliRunner

import raysteal.training.target_cache as target_cache
from raysteal.errors import ConfigError
from raysteal.experiment.config import parse_experiment
from raysteal.models.base import make_config
from raysteal.results.store import run_id
from raysteal.training import train_target
from raysteal.training.config import make_train_config
from raysteal.training.gro import (
    GROObjective,
    make_gro_config,
    student_config,
    student_ranking_loss,
    swap_items,
    swap_loss,
)
from raysteal.training.trainer import seeded_model

MODEL = {"model": "sasrec", "embedding_dim": 16, "max_len": 12}
TRAIN = {"epochs": 3, "batch_size": 64, "lr": 5e-3, "early_stopping": False}


def log():
    return toy_log(num_users=120, num_items=60, seed=0)


@cache
def trained(gro_strength: float | None):
    gro = None if gro_strength is None else {"strength": gro_strength, "k": 20}
    return train_target(log(), MODEL, TRAIN, seed=0, device="cpu", progress=False, gro=gro)


def _lists(model, k: int = 10) -> torch.Tensor:
    sequences = torch.as_tensor(log().padded_sequences(12, np.arange(60)))
    with torch.no_grad():
        return model.eval().score(sequences).topk(k, dim=1).indices


# ------------------------------------------------------------ the objective
def test_the_swap_is_the_row_maximum_of_the_swap_matrix_gradient():
    """swap_items' closed form equals GRO's construction: a one-hot swap matrix A, the student's
    listed scores A @ s, the loss's gradient w.r.t. A, its maximum over the catalogue per rank."""
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 30, generator=gen)
    listed = torch.stack([torch.randperm(30, generator=gen)[:6] for _ in range(5)])
    swap = torch.zeros(5, 6, 30)
    swap.scatter_(2, listed[:, :, None], 1.0)
    swap.requires_grad_(True)
    picked = torch.bmm(swap, scores[:, :, None]).squeeze(-1)
    negatives = scores.gather(1, torch.randint(0, 30, (5, 6), generator=gen))
    loss = student_ranking_loss(picked, negatives, margin=0.5)
    (matrix_grad,) = torch.autograd.grad(loss, swap, retain_graph=True)
    (grad,) = torch.autograd.grad(loss, picked)
    items, active = swap_items(grad, scores)
    assert active.any()
    assert torch.equal(items[active], matrix_grad.argmax(-1)[active])
    assert torch.allclose(matrix_grad, grad[:, :, None] * scores[:, None, :])


def test_the_swap_loss_is_differentiable_and_lifts_the_swapped_items():
    target = torch.tensor([[5.0, 4.0, 3.0, 0.0, -1.0]], requires_grad=True)
    listed, swaps = torch.tensor([[0, 1, 2]]), torch.tensor([[4, 4, 3]])
    loss = swap_loss(target, listed, swaps, torch.tensor([[True, True, False]]))
    assert loss.item() == pytest.approx(((5 + 1) + (4 + 1)) / 3)
    (grad,) = torch.autograd.grad(loss, target)
    assert grad[0, 0] > 0 and grad[0, 1] > 0 and grad[0, 2] == 0  # descent lowers the listed items
    assert grad[0, 4] < 0 and grad[0, 3] == 0  # and lifts the swapped-in item, not the inactive one


def test_one_gro_step_trains_the_student_and_gives_the_target_a_swap_gradient():
    model = seeded_model(MODEL, 120, 60, seed=0)
    config = make_gro_config({"strength": 1.0, "k": 10})
    student = seeded_model(student_config(config, make_config(MODEL)), 120, 60, seed=1)
    objective = GROObjective(config, student, lr=1e-2, seed=0, device=torch.device("cpu"))
    batch = next(iter(model.make_sampler(log(), 32).epoch(torch.Generator().manual_seed(0))))
    before = [p.detach().clone() for p in student.parameters()]
    loss = objective(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))  # the student stepped
    own = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model.loss(batch).backward()
    plain = [p.grad for p in model.parameters() if p.grad is not None]
    assert any(not torch.allclose(a, b) for a, b in zip(own, plain))  # the swap loss reaches the target
    summary = objective.summary()
    assert summary["steps"] == 1 and summary["swap_loss"] > 0 and summary["student_loss"] > 0


def test_strength_zero_trains_the_plain_target_bit_for_bit():
    plain, plain_metrics = trained(None)
    zero, zero_metrics = trained(0.0)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), zero.state_dict().values()))
    assert zero_metrics["test"] == plain_metrics["test"]
    assert zero_metrics["train"]["gro"]["steps"] > 0  # the student did train beside it


def test_gro_moves_the_target_lists():
    plain, _ = trained(None)
    defended, metrics = trained(5.0)
    same = (_lists(plain)[:, :, None] == _lists(defended)[:, None, :]).any(-1).float().mean()
    assert same < 0.8
    assert metrics["train"]["gro"]["swap_loss"] >= 0


BPR = {"model": "bpr", "embedding_dim": 8}
BPR_TRAIN = {"epochs": 4, "batch_size": 128, "lr": 1e-2, "early_stopping": False}


def test_collaborative_gro_trains_the_plain_target_at_strength_zero_and_moves_its_lists():
    plain, _ = train_target(log(), BPR, BPR_TRAIN, seed=0, device="cpu", progress=False)
    zero, _ = train_target(log(), BPR, BPR_TRAIN, seed=0, device="cpu", progress=False, gro={"strength": 0.0, "k": 20})
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), zero.state_dict().values()))
    defended, metrics = train_target(log(), BPR, BPR_TRAIN, seed=0, device="cpu", progress=False, gro={"strength": 5.0, "k": 20})
    users = torch.arange(120)
    with torch.no_grad():
        before, after = plain.score(users).topk(10).indices, defended.score(users).topk(10).indices
    assert (before[:, :, None] == after[:, None, :]).any(-1).float().mean() < 0.8
    assert metrics["train"]["gro"]["steps"] > 0


# ------------------------------------------------------------ the cache key
def test_gro_is_part_of_the_target_cache_key():
    args = dict(seed=0, split="leave_one_out", dataset="toy", preprocess="none")
    cfg, tcfg = make_config(MODEL), make_train_config({"epochs": 1})
    plain = target_cache.target_key(log(), cfg, tcfg, **args)
    gro = target_cache.target_key(log(), cfg, tcfg, gro=make_gro_config({"strength": 1.0}), **args)
    stronger = target_cache.target_key(log(), cfg, tcfg, gro=make_gro_config({"strength": 2.0}), **args)
    assert len({plain, gro, stronger}) == 3
    assert plain == target_cache.target_key(log(), cfg, tcfg, gro=None, **args)


def test_get_or_train_target_caches_gro_targets_apart(tmp_path):
    train = {"epochs": 1, "batch_size": 64}
    gro = {"strength": 1.0, "k": 10}
    kw = dict(cache_dir=tmp_path, device="cpu", progress=False)
    _, clean = target_cache.get_or_train_target(log(), MODEL, train, **kw)
    _, defended = target_cache.get_or_train_target(log(), MODEL, train, gro=gro, **kw)
    assert clean["path"] != defended["path"] and not defended["cache_hit"]
    assert defended["extra"]["gro"] == make_gro_config(gro).model_dump(mode="json")
    assert "gro" not in clean["extra"]
    _, again = target_cache.get_or_train_target(log(), MODEL, train, gro=gro, **kw)
    assert again["cache_hit"] and again["path"] == defended["path"]


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "bad, match",
    [
        ({"strength": -0.5}, "gro: strength: Input should be greater than or equal to 0"),
        ({"strength": 1e4}, "gro: strength: Input should be less than or equal to 1000"),
        ({"strength": True}, "gro: strength: must be a number"),
        ({"strength": 1.0, "lambda": 2}, "gro: lambda: unknown key"),
        ({"k": 10}, "gro: strength: Field required"),
        ({"strength": 1.0, "k": 1}, "gro: k: Input should be greater than or equal to 2"),
        ({"strength": 1.0, "student": "bert4rec"}, "gro: student: 'bert4rec' is not trained on next-item windows"),
        ({"strength": 1.0, "student": "nope"}, "gro: student: unknown model 'nope'"),
        (0.5, "gro: expected a mapping"),
    ],
)
def test_bad_gro_settings_are_one_line_errors(bad, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_gro_config(bad)
    assert "\n" not in str(info.value)


def test_gro_needs_a_next_item_or_collaborative_target_and_a_student_of_its_kind():
    with pytest.raises(ConfigError, match="gro: 'bert4rec' is not trained on next-item windows"):
        target_cache.checked_gro({"strength": 1.0}, make_config({"model": "bert4rec"}))
    with pytest.raises(ConfigError, match="gro: student 'bpr' cannot read the queries of a sequential target 'sasrec'"):
        target_cache.checked_gro({"strength": 1.0, "student": "bpr"}, make_config(MODEL))
    with pytest.raises(ConfigError, match="gro: student 'gru4rec' cannot read the queries of a collaborative target 'bpr'"):
        target_cache.checked_gro({"strength": 1.0, "student": "gru4rec"}, make_config({"model": "bpr"}))
    assert target_cache.checked_gro({"strength": 1.0, "student": "lmf"}, make_config({"model": "bpr"})) is not None


def _experiment(target: dict) -> dict:
    return {
        "experiment": "gro",
        "datasets": [{"name": "synthetic"}],
        "targets": [target],
        "attacks": [{"attack": "popularity"}],
        "split": {"aux_fraction": 0.0},
        "seeds": 1,
    }


def test_a_target_entry_takes_gro_and_checks_it(tmp_path):
    config = parse_experiment(_experiment({"model": "sasrec", "gro": {"strength": 0.5}}))
    assert config.targets[0].gro == make_gro_config({"strength": 0.5}).model_dump()
    with pytest.raises(ConfigError, match=r"targets\.0\.gro: strength: Input should be greater than or equal to 0"):
        parse_experiment(_experiment({"model": "sasrec", "gro": {"strength": -1}}))
    with pytest.raises(ConfigError, match=r"targets\.0\.gro: swap: unknown key"):
        parse_experiment(_experiment({"model": "sasrec", "gro": {"strength": 1, "swap": 2}}))
    with pytest.raises(ConfigError, match="gro: 'bert4rec' is not trained on next-item windows"):
        parse_experiment(_experiment({"model": "bert4rec", "gro": {"strength": 1}}))
    with pytest.raises(ConfigError, match="gro: a checkpoint target is trained already"):
        parse_experiment(_experiment({"model": "sasrec", "checkpoint": str(tmp_path / "t.pt"), "gro": {"strength": 1}}))


def test_a_target_without_gro_keeps_its_run_id():
    from raysteal.experiment.run import expand_runs

    run = expand_runs(parse_experiment(_experiment({"model": "sasrec"})))[0].spec
    assert run["target"]["gro"] is None
    legacy = {**run, "target": {k: v for k, v in run["target"].items() if k != "gro"}}
    assert run_id(run) == run_id(legacy)
    defended = {**run, "target": {**run["target"], "gro": make_gro_config({"strength": 1.0}).model_dump()}}
    assert run_id(defended) != run_id(run)


# ------------------------------------------------------------ the command line
def test_train_target_refuses_a_bad_gro_strength_before_reading_data(tmp_path):
    from raysteal.cli import app

    result = CliRunner().invoke(
        app, ["train-target", "--dataset", "ml-100k", "--model", "sasrec", "--out", str(tmp_path / "t"), "--gro-strength", "-1"]
    )
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == "gro: strength: Input should be greater than or equal to 0"
    result = CliRunner().invoke(
        app, ["train-target", "--dataset", "ml-100k", "--model", "bert4rec", "--out", str(tmp_path / "t"), "--gro-strength", "1"]
    )
    assert isinstance(result.exception, ConfigError) and "'bert4rec' is not trained on next-item windows" in str(result.exception)


def test_the_all_pairs_hinge_and_the_row_membership_equal_their_broadcast_definitions():
    """all_pairs_hinge_mean (sorted rows) gives the [N, k, m] hinge's mean and gradients, ties
    and an empty side included; in_rows gives the [N, m, k] comparison's answer."""
    import torch.nn.functional as F

    from raysteal.training.gro import all_pairs_hinge_mean, in_rows

    gen = torch.Generator().manual_seed(3)
    for rows, k, m in ((4, 6, 9), (50, 100, 100)):
        pos = torch.randn(rows, k, generator=gen).requires_grad_()
        neg = torch.randn(rows, m, generator=gen)
        neg[0, :3] = pos.detach()[0, :3] + 0.25  # exactly on no boundary, but equal gaps
        neg = neg.requires_grad_()
        want = F.relu(0.5 - (pos[:, :, None] - neg[:, None, :])).mean()
        want_grads = torch.autograd.grad(want * 2.0, [pos, neg])
        got = all_pairs_hinge_mean(pos, neg, 0.5)
        got_grads = torch.autograd.grad(got * 2.0, [pos, neg])
        assert float(got) == pytest.approx(float(want), rel=1e-6)
        for a, b in zip(want_grads, got_grads):
            assert torch.allclose(a, b, atol=1e-9)
    assert float(all_pairs_hinge_mean(torch.zeros(3, 2), torch.zeros(3, 0), 0.5).nan_to_num(-1.0)) == -1.0  # empty: the plain mean (NaN)
    lists = torch.randint(0, 40, (30, 10), generator=gen)
    draws = torch.randint(0, 40, (30, 10), generator=gen)
    assert torch.equal(in_rows(lists, draws), (draws[:, :, None] == lists[:, None, :]).any(-1))
    assert not in_rows(torch.zeros(3, 0, dtype=torch.long), draws[:3]).any()
