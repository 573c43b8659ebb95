"""Ownership watermarks (AOW, arXiv 2407.21034; key-based as GREW): the key's sequences, their
entry into training, the exact test, and the target-entry / cache hooks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from watermark_fixtures import MARK, MODEL, NUM_ITEMS, log, trained

import raysteal.training.target_cache as target_cache
from raysteal.data.splits import NO_ITEM, leave_one_out
from raysteal.errors import ConfigError
from raysteal.experiment.config import parse_experiment
from raysteal.models.base import make_config
from raysteal.oracle import TargetSpec, in_process_oracle
from raysteal.results.store import run_id
from raysteal.training.config import make_train_config
from raysteal.watermark import (
    make_watermark_config,
    poisson_binomial_sf,
    probe_pairs,
    verify_watermark,
    watermark_sequences,
    watermarked_split,
)


# ------------------------------------------------------------------ the key
def test_a_key_draws_the_same_sequences_every_time_and_keys_differ():
    config = make_watermark_config(MARK)
    first = watermark_sequences(config, 3706)
    assert first.shape == (3, 8) and first.dtype == np.int64
    np.testing.assert_array_equal(first, watermark_sequences(make_watermark_config(dict(MARK)), 3706))
    other = watermark_sequences(make_watermark_config({**MARK, "key": MARK["key"] + 1}), 3706)
    assert not np.array_equal(first, other)
    assert len(set(first.ravel().tolist()) & set(other.ravel().tolist())) < 6  # independent draws, not a shift
    assert len(np.unique(first)) == first.size and first.min() >= 0 and first.max() < 3706


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"key": -1}, "key: Input should be greater than or equal to 0"),
        ({"key": 2**63}, "key: Input should be less than or equal to"),
        ({"key": True}, "key"),
        ({"key": 1, "copies": 0}, "copies: Input should be greater than or equal to 1"),
        ({"key": 1, "copies": 10_001}, "copies: Input should be less than or equal to 10000"),
        ({"key": 1, "length": 2}, "length: Input should be greater than or equal to 3"),
        ({"key": 1, "strength": 3}, "strength: unknown key"),
        ({}, "key: Field required"),
    ],
)
def test_bad_watermark_settings_are_one_line_errors(bad, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_watermark_config(bad)
    assert "\n" not in str(info.value) and str(info.value).startswith("watermark: ")


def test_a_catalogue_too_small_for_the_watermark_is_refused():
    with pytest.raises(ConfigError, match="need a catalogue of more than 24 items, this one has 20"):
        watermark_sequences(make_watermark_config(MARK), 20)


# ------------------------------------------------------------ into training
def test_the_watermark_users_join_the_training_log_only():
    split = leave_one_out(log())
    config = make_watermark_config(MARK)
    marked = watermarked_split(split, config)
    extra = config.sequences * config.copies
    assert marked.train.num_users == split.train.num_users + extra
    np.testing.assert_array_equal(marked.valid[: split.train.num_users], split.valid)
    np.testing.assert_array_equal(marked.test[: split.train.num_users], split.test)
    assert (marked.valid[split.train.num_users :] == NO_ITEM).all() and (marked.test[split.train.num_users :] == NO_ITEM).all()
    for user in range(split.train.num_users):  # the real users' histories are untouched
        np.testing.assert_array_equal(marked.train.sequence(user), split.train.sequence(user))
    marks = watermark_sequences(config, NUM_ITEMS)
    added = [tuple(marked.train.sequence(u)) for u in range(split.train.num_users, marked.train.num_users)]
    assert sorted(added) == sorted(tuple(row) for row in np.repeat(marks, config.copies, axis=0))


def test_train_target_fits_on_the_watermarked_log_and_evaluates_real_users(monkeypatch):
    seen = {}
    real_fit = target_cache.fit

    def spy(model, split, *args, **kwargs):
        seen["split"] = split
        return real_fit(model, split, *args, **kwargs)

    monkeypatch.setattr(target_cache, "fit", spy)
    model, metrics = target_cache.train_target(
        log(), MODEL, {"epochs": 1, "batch_size": 64}, seed=0, device="cpu", progress=False, watermark=MARK
    )
    marks = watermark_sequences(make_watermark_config(MARK), NUM_ITEMS)
    train = seen["split"].train
    windows = {tuple(train.sequence(u)) for u in range(train.num_users)}
    assert all(tuple(row) in windows for row in marks)
    assert model.num_users == log().num_users  # the model serves the real users' id space
    assert metrics["test"]["users"] == leave_one_out(log()).evaluable_users.size  # only real users are scored


def test_a_watermark_needs_a_sequential_model_long_enough():
    with pytest.raises(ConfigError, match="'bpr' is not a sequential model"):
        target_cache.checked_watermark(MARK, make_config({"model": "bpr"}))
    with pytest.raises(ConfigError, match="length 8 exceeds the model's max_len 5"):
        target_cache.checked_watermark(MARK, make_config({**MODEL, "max_len": 5}))


def test_the_watermark_is_part_of_the_target_cache_key():
    args = dict(seed=0, split="leave_one_out", dataset="toy", preprocess="none")
    cfg, tcfg = make_config(MODEL), make_train_config({"epochs": 1})
    plain = target_cache.target_key(log(), cfg, tcfg, **args)
    marked = target_cache.target_key(log(), cfg, tcfg, watermark=make_watermark_config(MARK), **args)
    other = target_cache.target_key(log(), cfg, tcfg, watermark=make_watermark_config({**MARK, "key": 7}), **args)
    stronger = target_cache.target_key(log(), cfg, tcfg, watermark=make_watermark_config({**MARK, "copies": 30}), **args)
    assert len({plain, marked, other, stronger}) == 4
    assert plain == target_cache.target_key(log(), cfg, tcfg, watermark=None, **args)


def test_get_or_train_target_caches_watermarked_targets_apart(tmp_path):
    train = {"epochs": 1, "batch_size": 64}
    _, clean = target_cache.get_or_train_target(log(), MODEL, train, cache_dir=tmp_path, device="cpu", progress=False)
    _, marked = target_cache.get_or_train_target(log(), MODEL, train, cache_dir=tmp_path, device="cpu", progress=False, watermark=MARK)
    assert clean["path"] != marked["path"] and not marked["cache_hit"]
    assert marked["extra"]["watermark"] == make_watermark_config(MARK).model_dump(mode="json")
    assert "watermark" not in clean["extra"]
    _, again = target_cache.get_or_train_target(log(), MODEL, train, cache_dir=tmp_path, device="cpu", progress=False, watermark=MARK)
    assert again["cache_hit"] and again["path"] == marked["path"]


# ------------------------------------------------------------ the test
def test_poisson_binomial_tail_matches_the_binomial_and_a_direct_sum():
    n, p = 30, 0.1
    for h in (0, 1, 3, 10, 30):
        expected = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(h, n + 1))
        assert poisson_binomial_sf(np.full(n, p), h) == pytest.approx(expected, rel=1e-10)
    probs = np.array([0.2, 0.5, 0.9])  # P[X >= 2] by enumeration
    direct = 0.2 * 0.5 * 0.1 + 0.2 * 0.5 * 0.9 + 0.2 * 0.5 * 0.9 + 0.8 * 0.5 * 0.9
    assert poisson_binomial_sf(probs, 2) == pytest.approx(direct)
    assert poisson_binomial_sf(probs, 4) == 0.0


def test_probe_pairs_cut_every_row_after_min_prefix():
    marks = np.arange(12).reshape(3, 4)
    prefixes, targets, drawn = probe_pairs(marks, min_prefix=2)
    assert [p.tolist() for p in prefixes] == [[0, 1], [0, 1, 2], [4, 5], [4, 5, 6], [8, 9], [8, 9, 10]]
    assert targets.tolist() == [2, 3, 6, 7, 10, 11] and drawn.tolist() == [2, 3, 6, 7, 10, 11]
    with pytest.raises(ConfigError, match="min_prefix must lie in 1..3"):
        probe_pairs(marks, min_prefix=4)


def _verify(model, **kwargs):
    oracle = in_process_oracle(TargetSpec(model=model), device="cpu")
    try:
        return verify_watermark(oracle.register_attacker("owner"), make_watermark_config(MARK), **kwargs)
    finally:
        oracle.close()


def test_the_watermarked_target_is_verified_and_independent_models_are_not():
    marked, _ = trained(0, True)
    result = _verify(marked, k=5, decoys=2)
    assert result.trials == 3 * 7 and result.queries == 3 * 21
    assert result.hits >= 18 and result.p_value < 1e-15 and result.carries_watermark
    assert result.decoy_hit_rate < 0.3  # it memorised the key's sequences, not random prefixes
    for seed, model in ((1, "sasrec"), (0, "gru4rec")):
        clean, _ = trained(seed, False, model)
        other = _verify(clean, k=5)
        assert other.hits <= 4 and other.p_value > 0.05 and not other.carries_watermark, (model, other)


def test_a_collaborative_suspect_is_refused():
    from model_fixtures import small_config

    from raysteal.training import seeded_model

    mf = seeded_model(small_config("bpr"), 10, NUM_ITEMS, seed=0)
    oracle = in_process_oracle(TargetSpec(model=mf, exclude_seen=False), device="cpu")
    try:
        with pytest.raises(ConfigError, match="collaborative recommender"):
            verify_watermark(oracle.register_attacker("owner"), make_watermark_config(MARK))
    finally:
        oracle.close()


# ------------------------------------------------------------ experiment files
def _experiment(target: dict) -> dict:
    return {
        "experiment": "wm",
        "datasets": [{"name": "synthetic"}],
        "targets": [target],
        "attacks": [{"attack": "popularity"}],
        "split": {"aux_fraction": 0.0},
        "seeds": 1,
    }


def test_a_target_entry_takes_a_watermark_and_checks_it():
    config = parse_experiment(_experiment({"model": "sasrec", "watermark": {"key": 5}}))
    assert config.targets[0].watermark == {"key": 5, "sequences": 8, "length": 12, "copies": 20}
    with pytest.raises(ConfigError, match=r"targets\.0\.watermark: key: Input should be greater than or equal to 0"):
        parse_experiment(_experiment({"model": "sasrec", "watermark": {"key": -3}}))
    with pytest.raises(ConfigError, match="targets.0: watermark: 'bpr' is not a sequential model"):
        parse_experiment(_experiment({"model": "bpr", "watermark": {"key": 5}}))
    with pytest.raises(ConfigError, match="targets.0: watermark: length 12 exceeds the model's max_len 10"):
        parse_experiment(_experiment({"model": "sasrec", "params": {"max_len": 10}, "watermark": {"key": 5}}))


def test_a_target_without_watermark_keeps_its_run_id():
    from raysteal.experiment.run import expand_runs

    run = expand_runs(parse_experiment(_experiment({"model": "sasrec"})))[0].spec
    assert run["target"]["watermark"] is None
    legacy = {**run, "target": {k: v for k, v in run["target"].items() if k != "watermark"}}
    assert run_id(run) == run_id(legacy)
    marked = {**run, "target": {**run["target"], "watermark": {"key": 5, "sequences": 8, "length": 12, "copies": 20}}}
    assert run_id(marked) != run_id(run)


def test_a_runs_watermark_columns_prove_the_marked_model_and_clear_a_clean_one():
    """The columns a run against a watermarked target gets (raysteal.experiment.watermark_check),
    on the watermarked target itself and on an independently trained SASRec."""
    from raysteal.experiment.watermark_check import clone_watermark_columns
    from raysteal.watermark import DEFAULT_ALPHA

    marked = clone_watermark_columns(trained(0, True)[0], MARK)
    assert marked["carries_watermark"] and marked["watermark_p_value"] < 1e-10
    assert marked["watermark_trials"] == 3 * 7 and marked["watermark_hit_rate"] > marked["watermark_decoy_hit_rate"]
    clean = clone_watermark_columns(trained(1, False)[0], MARK)
    assert not clean["carries_watermark"] and clean["watermark_p_value"] > DEFAULT_ALPHA
