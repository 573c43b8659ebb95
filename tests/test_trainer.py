"""The generic trainer and the leave-one-out evaluation protocol, on tiny synthetic logs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysteal.data.interactions import Interactions
from raysteal.data.splits import leave_one_out
from raysteal.errors import ConfigError
from raysteal.models import PAD, Recommender, model_class, model_names
from raysteal.training import TrainConfig, evaluate, fit, make_train_config, seeded_model, validation_ndcg
from raysteal.training.evaluate import model_inputs, seen_csr
from tests.model_fixtures import small_config as _small_config
from tests.model_fixtures import toy_log


def small_config(name: str) -> dict:
    return _small_config(name, embedding_dim=16, max_len=12)


@pytest.fixture(scope="module")
def split():
    return leave_one_out(toy_log())


@pytest.mark.parametrize("name", model_names())
def test_every_model_trains_and_its_loss_falls(name, split):
    model = seeded_model(small_config(name), split.train.num_users, split.train.num_items, seed=0)
    config = {"epochs": 6, "batch_size": 32, "lr": 1e-2, "early_stopping": False, "eval_every": 6}
    result = fit(model, split, config, seed=0, progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert result.samples > 0 and result.samples_per_second > 0
    inputs = model_inputs(model, split, np.arange(5), "test")
    scores = model.score(inputs)
    assert scores.shape == (5, split.train.num_items)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", [n for n in model_names() if model_class(n).sequential])
def test_sequential_scores_ignore_extra_left_padding(name, split):
    model = seeded_model(small_config(name), split.train.num_users, split.train.num_items, seed=0).eval()
    seqs = split.train.padded_sequences(8, np.arange(6), pad=PAD)
    padded = np.concatenate([np.full((6, 4), PAD), seqs], axis=1)
    with torch.no_grad():
        a = model.score(torch.from_numpy(seqs))
        b = model.score(torch.from_numpy(padded))
    assert a.shape == b.shape == (6, split.train.num_items)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", ["bpr", "sasrec"])
def test_fit_is_deterministic_on_cpu_and_leaves_global_rng_alone(name, split):
    if name not in model_names():
        pytest.skip(f"{name} not registered")
    state = torch.random.get_rng_state()
    weights = []
    for _ in range(2):
        model = seeded_model(small_config(name), split.train.num_users, split.train.num_items, seed=3)
        fit(model, split, {"epochs": 2, "batch_size": 32, "lr": 1e-2}, seed=3, progress=False)
        weights.append(model.state_dict())
    assert torch.equal(torch.random.get_rng_state(), state)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    other = seeded_model(small_config(name), split.train.num_users, split.train.num_items, seed=4)
    fit(other, split, {"epochs": 2, "batch_size": 32, "lr": 1e-2}, seed=4, progress=False)
    assert not all(torch.equal(weights[0][k], other.state_dict()[k]) for k in weights[0])


def test_early_stopping_restores_the_best_validated_weights(split):
    model = seeded_model({"model": "bpr", "embedding_dim": 16}, split.train.num_users, split.train.num_items, 0)
    # a learning rate this high makes validation NDCG wander, so the best epoch is rarely the last
    result = fit(model, split, {"epochs": 12, "batch_size": 16, "lr": 0.3, "patience": 2}, seed=0, progress=False)
    validated = [h["valid_ndcg@10"] for h in result.history if "valid_ndcg@10" in h]
    assert result.best_valid_ndcg == pytest.approx(max(validated))
    assert result.history[result.best_epoch - 1]["valid_ndcg@10"] == pytest.approx(max(validated))
    assert validation_ndcg(model, split) == pytest.approx(result.best_valid_ndcg)
    stale = result.epochs_run - result.best_epoch
    assert result.epochs_run == 12 or stale == 2


def test_noise_does_not_reset_patience_but_the_best_weights_are_kept():
    """min_delta: a validation resets patience only when it beats the best by that relative margin;
    a smaller gain still becomes the best (its weights are the ones restored)."""
    from types import SimpleNamespace

    from raysteal.training.trainer import _after_validation

    model = seeded_model({"model": "bpr", "embedding_dim": 4}, 5, 7, 0)
    result = SimpleNamespace(best_valid_ndcg=float("-inf"), best_epoch=0)
    config = make_train_config({"min_delta": 0.01})
    stale, best = 0, None
    trace = []
    for epoch, ndcg in enumerate([0.100, 0.1005, 0.1004, 0.1020, 0.1021], start=1):
        stale, best = _after_validation(model, config, result, epoch, ndcg, stale, best)
        trace.append((stale, result.best_epoch))
    assert trace == [(0, 1), (1, 2), (2, 2), (0, 4), (1, 5)]
    plain = SimpleNamespace(best_valid_ndcg=float("-inf"), best_epoch=0)
    stale = 0
    for epoch, ndcg in enumerate([0.100, 0.1005, 0.1004], start=1):  # min_delta 0: any gain resets, as before
        stale, _ = _after_validation(model, make_train_config(), plain, epoch, ndcg, stale, None)
    assert stale == 1 and plain.best_epoch == 2


def test_min_steps_keeps_a_small_log_training(split):
    """On a small log an epoch is few optimiser steps: min_steps sets the budget in steps."""

    def run(**extra):
        model = seeded_model({"model": "bpr", "embedding_dim": 16}, split.train.num_users, split.train.num_items, 0)
        config = {"epochs": 30, "batch_size": 64, "lr": 1e-2, "patience": 1, "min_delta": 0.9, **extra}
        return fit(model, split, config, seed=0, progress=False)

    quick = run()  # a 90% margin is never met: patience 1 stops at the second validation
    assert quick.epochs_run == 2
    steps_per_epoch = len(seeded_model({"model": "bpr"}, split.train.num_users, split.train.num_items, 0).make_sampler(split.train, 64))
    held = run(min_steps=6 * steps_per_epoch)
    assert held.epochs_run == 6
    with pytest.raises(ConfigError, match="min_delta"):
        make_train_config({"min_delta": 1.5})


def test_new_stopping_settings_at_their_defaults_leave_target_cache_keys_alone():
    from raysteal.training.target_cache import without_added_fields

    kept = without_added_fields(make_train_config().model_dump(mode="json"))
    assert "min_steps" not in kept and "min_delta" not in kept
    assert "min_steps" in without_added_fields(make_train_config({"min_steps": 10}).model_dump(mode="json"))


def test_time_box_stops_after_the_epoch_that_passes_it_and_validates_it(split):
    model = seeded_model({"model": "bpr", "embedding_dim": 16}, split.train.num_users, split.train.num_items, 0)
    config = {"epochs": 50, "batch_size": 16, "lr": 1e-2, "eval_every": 10, "max_seconds": 1e-6}
    result = fit(model, split, config, seed=0, progress=False)
    assert result.stopped_by_time and result.epochs_run == 1
    assert "valid_ndcg@10" in result.history[-1]  # the last epoch is validated though eval_every is 10
    assert result.best_epoch == 1 and result.summary()["stopped_by_time"]
    with pytest.raises(ConfigError, match="max_seconds"):
        make_train_config({"max_seconds": 0})


def test_train_config_validation_names_the_key():
    assert make_train_config({"epochs": 3}, lr=0.1) == TrainConfig(epochs=3, lr=0.1)
    with pytest.raises(ConfigError, match="epochz"):
        make_train_config({"epochz": 3})
    with pytest.raises(ConfigError, match="batch_size"):
        make_train_config({"batch_size": 0})
    with pytest.raises(ConfigError, match="device"):
        fit(seeded_model({"model": "bpr"}, 3, 3, 0), leave_one_out(toy_log()), device="nonsense", progress=False)


class _Oracle(Recommender):
    """Training items score 5, a favourite item 1, a runner-up 0.5, the rest 0 (a test double)."""

    name = "oracle-test-double"
    sequential = False
    Config = None  # not registered

    def __init__(self, favourite: np.ndarray, runner_up: np.ndarray, train: Interactions):
        torch.nn.Module.__init__(self)
        self.num_users, self.num_items = train.num_users, train.num_items
        table = torch.zeros(train.num_users, train.num_items)
        table[torch.from_numpy(train.users), torch.from_numpy(train.items)] = 5.0
        table[torch.arange(train.num_users), torch.from_numpy(runner_up)] = 0.5
        table[torch.arange(train.num_users), torch.from_numpy(favourite)] = 1.0
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def score(self, inputs):
        return self.table[inputs]

    def loss(self, batch):  # pragma: no cover - never trained
        raise NotImplementedError

    def make_sampler(self, train, batch_size):  # pragma: no cover
        raise NotImplementedError


def test_evaluate_excludes_seen_items_and_reports_both_protocols(split):
    # Training items score 5 but are excluded, so the favourite (the test item) ranks first.
    oracle = _Oracle(split.test, split.valid, split.train)
    res = evaluate(oracle, split, "test", k=10, num_negatives=20, seed=0)
    assert res["hr@10_20neg"] == 1.0 and res["ndcg@10_20neg"] == 1.0
    assert res["hr@10_full"] == 1.0 and res["ndcg@10_full"] == 1.0
    assert res["users"] == len(split.evaluable_users)
    assert set(res["per_user"]) == {"users", "rank_full", "rank_20neg"}
    assert (res["per_user"]["rank_full"] == 0).all()
    # The same model asked about the validation items: the favourite (test item) outranks them.
    valid = evaluate(oracle, split, "valid", k=1, num_negatives=20, seed=0)
    assert valid["hr@1_full"] == 0.0
    ranks = valid["per_user"]["rank_full"]
    assert (ranks == 1).all()  # only the favourite, unseen during validation, is above
    assert valid["ndcg@1_full"] == 0.0


def test_evaluation_inputs_follow_the_protocol(split):
    if "sasrec" not in model_names():
        pytest.skip("sasrec not registered")
    model = seeded_model({"model": "sasrec", "max_len": 6}, split.train.num_users, split.train.num_items, 0)
    users = np.array([0, 5])
    valid_in = model_inputs(model, split, users, "valid").numpy()
    test_in = model_inputs(model, split, users, "test").numpy()
    assert valid_in.shape == test_in.shape == (2, 6)
    for row, u in enumerate(users):
        seq = split.train.sequence(u)
        assert list(valid_in[row][valid_in[row] != PAD]) == list(seq[-6:])
        assert list(test_in[row][test_in[row] != PAD]) == list(np.append(seq, split.valid[u])[-6:])
    ptr, items = seen_csr(split, users, "test")
    assert list(items[ptr[1] - 1 : ptr[1]]) == [split.valid[0]]
    assert sorted(items[: ptr[1] - 1]) == sorted(split.train.sequence(0))
    collab = seeded_model({"model": "bpr"}, split.train.num_users, split.train.num_items, 0)
    assert model_inputs(collab, split, users, "test").tolist() == [0, 5]


def test_evaluate_rejects_bad_arguments(split):
    model = seeded_model({"model": "bpr"}, split.train.num_users, split.train.num_items, 0)
    with pytest.raises(ConfigError, match="which"):
        evaluate(model, split, "train")
    with pytest.raises(ConfigError, match="num_negatives"):
        evaluate(model, split, num_negatives=0)


def test_progress_display_runs_and_reports_each_epoch(split, capsys):
    model = seeded_model({"model": "lmf", "embedding_dim": 8}, split.train.num_users, split.train.num_items, 0)
    result = fit(model, split, {"epochs": 2, "batch_size": 64}, seed=0, progress=True)
    assert result.epochs_run == 2
    err = capsys.readouterr()
    text = err.out + err.err
    assert "epoch 1" in text and "epoch 2" in text and "valid NDCG@10" in text


@pytest.mark.parametrize("name", model_names())
def test_every_model_rejects_bad_dims_and_unknown_keys(name):
    from raysteal.models import build_model

    with pytest.raises(ConfigError, match="embedding_dim"):
        build_model({"model": name, "embedding_dim": -1}, 5, 5)
    with pytest.raises(ConfigError, match="no_such_key"):
        build_model({"model": name, "no_such_key": 1}, 5, 5)
    if model_class(name).sequential:
        with pytest.raises(ConfigError, match="max_len"):
            build_model({"model": name, "max_len": 0}, 5, 5)


@pytest.mark.parametrize("name", model_names())
def test_every_model_has_a_valid_preset(name):
    from raysteal.models import make_config
    from raysteal.training import preset

    model_cfg, train_cfg = preset(name)
    assert make_config(model_cfg).model == name
    assert make_train_config(train_cfg).epochs >= 1


class _Killed(RuntimeError):
    """Stands for the process dying in the middle of an epoch."""


def _kill_at_epoch(monkeypatch, epoch: int) -> None:
    import raysteal.training.trainer as trainer

    real, calls = trainer._run_epoch, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise _Killed(f"killed in epoch {epoch}")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "_run_epoch", dying)


@pytest.mark.parametrize("name", model_names())
def test_training_killed_mid_way_resumes_from_its_state_bit_identical(name, split, tmp_path, monkeypatch):
    """fit(state_path=...) killed in epoch 4 and run again ends where an uninterrupted fit does:
    same weights, same history, same best epoch (early stopping with a small patience, so the
    saved best weights and the stale counter matter)."""
    config = {"epochs": 7, "batch_size": 32, "lr": 1e-2, "eval_every": 1, "patience": 2, "min_epochs": 1}
    shape = (split.train.num_users, split.train.num_items)
    whole = fit(seeded_model(small_config(name), *shape, seed=3), split, config, seed=3, progress=False)

    state = tmp_path / "fit.state"
    with monkeypatch.context() as patch:
        _kill_at_epoch(patch, 4)
        with pytest.raises(_Killed):
            fit(seeded_model(small_config(name), *shape, seed=3), split, config, seed=3, progress=False, state_path=state)
    assert state.is_file()
    resumed = fit(seeded_model(small_config(name), *shape, seed=3), split, config, seed=3, progress=False, state_path=state)
    assert resumed.resumed_epoch == 3 and whole.resumed_epoch == 0
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert (resumed.best_epoch, resumed.epochs_run) == (whole.best_epoch, whole.epochs_run)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key

    # a state saved after the last epoch: nothing is trained again
    with monkeypatch.context() as patch:
        _kill_at_epoch(patch, 1)
        again = fit(seeded_model(small_config(name), *shape, seed=3), split, config, seed=3, progress=False, state_path=state)
    assert again.epochs_run == whole.epochs_run
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key


def test_a_training_state_made_for_another_run_is_refused_or_replaced(split, tmp_path):
    shape = (split.train.num_users, split.train.num_items)
    state = tmp_path / "fit.state"
    fit(seeded_model(small_config("bpr"), *shape, seed=0), split, {"epochs": 2, "batch_size": 32}, seed=0, progress=False, state_path=state)
    other = {"epochs": 2, "batch_size": 32, "lr": 5e-3}
    with pytest.raises(ConfigError, match="target training state .* was made for another run"):
        fit(seeded_model(small_config("bpr"), *shape, seed=0), split, other, seed=0, progress=False, state_path=state)
    state.write_bytes(b"not a state")
    with pytest.raises(ConfigError, match="unreadable"):
        fit(seeded_model(small_config("bpr"), *shape, seed=0), split, other, seed=0, progress=False, state_path=state)
    with pytest.warns(RuntimeWarning, match="training starts afresh"):
        result = fit(
            seeded_model(small_config("bpr"), *shape, seed=0),
            split,
            other,
            seed=0,
            progress=False,
            state_path=state,
            restart_if_unusable=True,
        )
    assert result.resumed_epoch == 0 and result.epochs_run == 2


def test_the_target_cache_resumes_a_killed_training_and_drops_its_state(tmp_path, monkeypatch):
    from raysteal.training import get_or_train_target

    log, cfg = toy_log(), small_config("sasrec")
    train = {"epochs": 5, "batch_size": 32, "lr": 1e-2, "early_stopping": False, "eval_every": 5}
    with monkeypatch.context() as patch:
        _kill_at_epoch(patch, 3)
        with pytest.raises(_Killed):
            get_or_train_target(log, cfg, train, cache_dir=tmp_path, progress=False, device="cpu")
    assert len(list(tmp_path.glob("*.training-state"))) == 1 and not list(tmp_path.glob("*.pt"))
    model, meta = get_or_train_target(log, cfg, train, cache_dir=tmp_path, progress=False, device="cpu")
    assert not meta["cache_hit"] and meta["metrics"]["train"]["resumed_epoch"] == 2
    assert meta["metrics"]["train"]["epochs_run"] == 5
    assert not list(tmp_path.glob("*.training-state")) and len(list(tmp_path.glob("*.pt"))) == 1
    fresh, _ = get_or_train_target(log, cfg, train, cache_dir=tmp_path / "fresh", progress=False, device="cpu")
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
