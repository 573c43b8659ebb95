"""Epoch budgets that scale with a log's steps per epoch (issue 25, item 2): a preset set on ML-1M
trains a small log for as many optimiser steps and waits as many steps for an improvement, and
ML-1M itself trains (and is keyed in the target cache) exactly as before."""

from __future__ import annotations

import math

import pytest

from raysteal.data.splits import leave_one_out
from raysteal.distributed.deploy import whole_training
from raysteal.training import fit, make_train_config, seeded_model
from raysteal.training.config import epoch_scale, scaled_to_log, with_overrides
from raysteal.training.presets import COLLABORATIVE_REFERENCE_STEPS, PRESETS, SEQUENTIAL_REFERENCE_STEPS, preset, preset_with
from raysteal.training.target_cache import get_or_train_target, make_split, scaled_train_config, target_key
from tests.model_fixtures import toy_log


@pytest.fixture(scope="module")
def log():
    return toy_log()


def _steps(log, model: dict, batch_size: int) -> int:
    return len(seeded_model(model, log.num_users, log.num_items, 0).make_sampler(leave_one_out(log).train, batch_size))


def test_a_small_log_multiplies_every_epoch_count_by_the_ratio_rounded_up():
    bpr = make_train_config(preset("bpr")[1])
    scaled = scaled_to_log(bpr, 48)  # ML-100K's steps per epoch under the BPR preset
    ratio = COLLABORATIVE_REFERENCE_STEPS / 48
    expected = (math.ceil(bpr.epochs * ratio), math.ceil(bpr.min_epochs * ratio), math.ceil(bpr.patience * ratio))
    assert (scaled.epochs, scaled.min_epochs, scaled.patience) == expected
    assert scaled.eval_every == bpr.eval_every and scaled.lr == bpr.lr  # validations keep their spacing; not a count
    assert scaled.reference_steps_per_epoch is None and epoch_scale(bpr, 48) == pytest.approx(ratio)


def test_a_log_at_or_above_the_reference_trains_as_without_one():
    bpr = make_train_config(preset("bpr")[1])
    plain = make_train_config({**preset("bpr")[1], "reference_steps_per_epoch": None})
    for steps in (COLLABORATIVE_REFERENCE_STEPS, 483):  # ML-1M's target half and whole log
        assert scaled_to_log(bpr, steps) == plain
        assert epoch_scale(bpr, steps) == 1.0
    assert scaled_to_log(plain, 1) == plain  # no reference: nothing scales


def test_epoch_counts_a_user_sets_are_taken_as_given():
    base = preset("sasrec")[1]
    assert "reference_steps_per_epoch" not in with_overrides(base, {"epochs": 5})
    assert "reference_steps_per_epoch" not in with_overrides(base, {"eval_every": 2})
    assert "reference_steps_per_epoch" not in with_overrides(base, {"patience": 2})
    assert with_overrides(base, {"epochs": 5, "reference_steps_per_epoch": 7})["reference_steps_per_epoch"] == 7
    assert with_overrides(base, {"lr": 1e-3})["reference_steps_per_epoch"] == SEQUENTIAL_REFERENCE_STEPS
    model_cfg, train_cfg = preset_with("bpr", {"embedding_dim": 8}, {"epochs": 3})
    assert model_cfg["embedding_dim"] == 8 and train_cfg["epochs"] == 3 and "reference_steps_per_epoch" not in train_cfg


def test_every_preset_names_the_reference_of_its_kind():
    for name, (_, train) in PRESETS.items():
        expected = (
            SEQUENTIAL_REFERENCE_STEPS if name in ("sasrec", "bert4rec", "gru4rec", "narm", "stamp") else COLLABORATIVE_REFERENCE_STEPS
        )
        assert train["reference_steps_per_epoch"] == expected, name


def test_fit_trains_a_small_log_for_the_reference_steps_validated_at_the_same_epoch_spacing(log):
    model_cfg = {"model": "bpr", "embedding_dim": 8}
    steps = _steps(log, model_cfg, 64)
    config = {"epochs": 2, "batch_size": 64, "eval_every": 2, "early_stopping": False, "reference_steps_per_epoch": 3 * steps}
    model = seeded_model(model_cfg, log.num_users, log.num_items, 0)
    result = fit(model, leave_one_out(log), config, seed=0, progress=False)
    assert result.epoch_scale == pytest.approx(3.0)
    assert result.epochs_run == 6 and result.config is not None and (result.config.epochs, result.config.patience) == (6, 9)
    assert [h["epoch"] for h in result.history if "valid_ndcg@10" in h] == [2, 4, 6]
    assert result.summary()["epoch_scale"] == pytest.approx(3.0)


def test_the_target_cache_keys_a_target_by_the_config_it_trained_with(log):
    model_cfg = seeded_model({"model": "bpr", "embedding_dim": 8}, log.num_users, log.num_items, 0).config
    steps = _steps(log, {"model": "bpr", "embedding_dim": 8}, 64)
    keyed = {"dataset": "toy", "preprocess": "none", "seed": 0, "split": "leave_one_out"}
    plain = make_train_config({"epochs": 2, "batch_size": 64})
    at_reference = make_train_config({"epochs": 2, "batch_size": 64, "reference_steps_per_epoch": steps})
    resolved = scaled_train_config(log, model_cfg, at_reference)
    assert target_key(log, model_cfg, resolved, **keyed) == target_key(log, model_cfg, plain, **keyed)  # a key cached before stays
    small = make_train_config({"epochs": 2, "batch_size": 64, "reference_steps_per_epoch": 2 * steps})
    assert scaled_train_config(log, model_cfg, small) == make_train_config({"epochs": 4, "batch_size": 64, "patience": 6, "min_epochs": 2})


def test_a_cached_target_records_the_scaled_config(log, tmp_path):
    model_cfg = {"model": "bpr", "embedding_dim": 8}
    steps = _steps(log, model_cfg, 64)
    train = {"epochs": 1, "batch_size": 64, "early_stopping": False, "reference_steps_per_epoch": 2 * steps}
    _, meta = get_or_train_target(log, model_cfg, train, cache_dir=tmp_path, progress=False, device="cpu")
    assert meta["extra"]["train_config"]["epochs"] == 2 and meta["extra"]["train_config"]["reference_steps_per_epoch"] is None
    assert meta["metrics"]["train"]["epochs_run"] == 2
    _, again = get_or_train_target(log, model_cfg, train, cache_dir=tmp_path, progress=False, device="cpu")
    assert again["cache_hit"] and again["extra"]["key"] == meta["extra"]["key"]


def test_a_whole_log_target_trains_its_twins_scaled_epochs_once():
    twin = {"best_epoch": 150, "epochs_run": 200}
    config = whole_training(preset("bpr")[1], twin)
    assert config["epochs"] == 150 and config["reference_steps_per_epoch"] is None
    assert make_train_config(config).epochs == 150


@pytest.mark.realdata
def test_ml1m_targets_train_and_are_keyed_as_before_the_scaling(shared_data):
    """Every preset on ML-1M's target half (the smallest log the presets were set on) is at or
    above its reference: no cached ML-1M target moves."""
    from raysteal.experiment.config import DatasetEntry, SplitConfig
    from raysteal.experiment.context import prepare_dataset
    from raysteal.models.base import make_config

    target = prepare_dataset(DatasetEntry(name="ml-1m"), SplitConfig(), str(shared_data)).target
    for name, (model_cfg, train_cfg) in PRESETS.items():
        cfg, tcfg = make_config(model_cfg), make_train_config(train_cfg)
        steps = len(seeded_model(cfg, target.num_users, target.num_items, 0).make_sampler(make_split(target).train, tcfg.batch_size))
        assert steps >= train_cfg["reference_steps_per_epoch"], (name, steps)
        assert epoch_scale(tcfg, steps) == 1.0


def test_an_experiment_target_and_train_target_take_set_epoch_counts_as_given():
    from raysteal.cli.models import _target_settings
    from raysteal.experiment.config import TargetEntry
    from raysteal.experiment.context import target_config

    _, train = target_config(TargetEntry(model="sasrec", train={"epochs": 40, "eval_users": 2000}))
    assert train["epochs"] == 40 and "reference_steps_per_epoch" not in train
    _, train = target_config(TargetEntry(model="sasrec", train={"lr": 1e-3}))
    assert train["reference_steps_per_epoch"] == SEQUENTIAL_REFERENCE_STEPS  # the preset's counts: scaled to the log
    _, train = _target_settings("bpr", [], 5)
    assert train["epochs"] == 5 and "reference_steps_per_epoch" not in train
    _, train = _target_settings("bpr", ["train.lr=0.01"], None)
    assert train["reference_steps_per_epoch"] == COLLABORATIVE_REFERENCE_STEPS


def test_a_validation_sample_as_large_as_the_log_resolves_away_and_keeps_the_target_key(log):
    """NeuMF's preset validates on at most 20,000 users (Beauty's 40,226 take 7 minutes a
    validation): a log with no more users validates on all of them, so it trains, and is keyed in
    the target cache, exactly as before the cap; a larger one is sampled and keyed apart."""
    from raysteal.models.base import make_config

    model_cfg, train_cfg = preset("neumf")
    assert make_train_config(train_cfg).eval_users == 20_000
    cfg = make_config(model_cfg)

    def key(eval_users: int | None) -> str:
        tcfg = scaled_train_config(log, cfg, make_train_config({**train_cfg, "eval_users": eval_users}))
        return target_key(log, cfg, tcfg, seed=0, split="leave_one_out", dataset="toy", preprocess="none")

    every = key(None)
    assert key(log.num_users) == every and key(20_000) == every
    assert key(log.num_users - 1) != every  # a real sample is another target
    capped = make_train_config(train_cfg)
    assert scaled_to_log(capped, 1, 20_000).eval_users is None
    assert scaled_to_log(capped, 1, 40_226).eval_users == 20_000
    assert scaled_to_log(capped, 1).eval_users == 20_000  # no user count given: nothing resolves
