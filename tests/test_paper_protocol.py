"""Zhu et al.'s protocol as settings (issue 24 item 3): a target trained on the whole target half
(``split.target_training: whole``), every known user queried (``query_fraction: 1.0``), and the
other reading of "10% of the target dataset" (``split.attacker_unit: interactions``); plus grid
values that set several split settings together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysteal.data import load_dataset
from raysteal.data.splits import leave_one_out, sampled_interactions, whole_log
from raysteal.errors import ConfigError
from raysteal.experiment.config import parse_experiment
from raysteal.experiment.execute import build_knowledge, execute_run
from raysteal.experiment.run import expand_runs
from raysteal.oracle import in_process_oracle
from raysteal.results.summary import cell_columns

TINY_BPR = {"model": "bpr", "params": {"embedding_dim": 8}, "train": {"epochs": 4, "batch_size": 1024, "eval_every": 1, "patience": 1}}


def _experiment(split: dict | None = None, grid: dict | None = None, model: dict | None = None, attack: str = "ptq"):
    return parse_experiment(
        {
            "experiment": "protocol",
            "seeds": 1,
            "datasets": [{"name": "synthetic"}],
            "targets": [model or TINY_BPR],
            "attacks": [{"attack": attack, "epochs": 1}],
            "split": split or {},
            "grid": grid or {},
            "k": 10,
        }
    )


def test_whole_log_trains_on_every_interaction_and_names_the_leave_one_out_items():
    log = load_dataset("synthetic")
    whole, held = whole_log(log), leave_one_out(log)
    assert whole.train is log and whole.train.num_interactions == held.train.num_interactions + 2 * len(held.evaluable_users)
    assert np.array_equal(whole.valid, held.valid) and np.array_equal(whole.test, held.test)


def test_sampled_interactions_keeps_a_share_of_the_rows_over_the_users_holding_them():
    log = load_dataset("synthetic")
    kept, users = sampled_interactions(log, 0.1, seed=3)
    assert kept.num_interactions == round(0.1 * log.num_interactions)
    assert np.array_equal(users, np.sort(users)) and kept.num_users == len(users) and (kept.user_lengths > 0).all()
    for row, user in enumerate(users[:25]):  # each known user's rows are some of its own, in their order
        own = log.items[log.indptr[user] : log.indptr[user + 1]]
        mine = kept.items[kept.indptr[row] : kept.indptr[row + 1]]
        position = [int(np.flatnonzero(own == item)[0]) for item in mine]
        assert position == sorted(position)
    again, _ = sampled_interactions(log, 0.1, seed=3)
    assert np.array_equal(again.items, kept.items)
    with pytest.raises(ConfigError, match="attacker fraction"):
        sampled_interactions(log, 0.0)


def test_an_attacker_holding_a_share_of_interactions_knows_more_users_with_less_each():
    from tests.oracle_fixtures import untrained_run_data

    _, loo, data = untrained_run_data(20, num_users=300, num_items=120, max_len=40, seed=4)
    by_users = build_knowledge(expand_runs(_experiment({"attacker_fraction": 0.1}))[0], data)
    by_rows = build_knowledge(expand_runs(_experiment({"attacker_fraction": 0.1, "attacker_unit": "interactions"}))[0], data)
    assert len(by_users.target_user_ids) == round(0.1 * loo.train.num_users)
    assert len(by_rows.target_user_ids) > len(by_users.target_user_ids)
    assert by_rows.target_data.num_interactions == round(0.1 * loo.train.num_interactions)
    assert len(by_rows.query_users) == round(0.8 * len(by_rows.target_user_ids))


def test_split_mappings_in_the_grid_change_settings_together_and_keep_ids():
    plain = expand_runs(_experiment())
    paired = expand_runs(_experiment(grid={"split": [{}, {"query_fraction": 1.0, "target_training": "whole"}]}))
    assert len(paired) == 2 and paired[0].id == plain[0].id  # an empty mapping is the file's own split
    assert paired[1].split.query_fraction == 1.0 and paired[1].split.target_training == "whole"
    assert paired[1].split.attacker_fraction == plain[0].split.attacker_fraction
    with pytest.raises(ConfigError, match="mapping"):
        _experiment(grid={"split": [0.5]})
    with pytest.raises(ConfigError, match="target_training"):
        expand_runs(_experiment(grid={"split": [{"target_training": "half"}]}))


def test_the_protocol_settings_are_cell_columns_only_where_they_vary():
    rows = pd.DataFrame(
        {
            "experiment": "t",
            "attack": "ptq",
            "seed": [0, 1, 0, 1],
            "query_fraction": [0.8, 0.8, 1.0, 1.0],
            "target_training": ["leave_one_out"] * 2 + ["whole"] * 2,
            "attacker_unit": "users",
        }
    )
    keys = cell_columns(rows)
    assert "query_fraction" in keys and "target_training" in keys and "attacker_unit" not in keys


def test_a_sequential_target_refuses_the_collaborative_protocol_settings(tmp_path):
    from raysteal.experiment.preflight import check_experiment_data

    config = _experiment({"target_training": "whole"}, model={"model": "sasrec"}, attack="dfme")
    with pytest.raises(ConfigError, match="collaborative targets only"):
        check_experiment_data(config, "protocol.yaml")


def test_a_whole_target_trains_after_its_twin_for_the_twins_best_epoch_and_holds_nothing_out(tmp_path):
    from raysteal.distributed.deploy import prepare_target, whole_training

    assert whole_training({"epochs": 60, "min_epochs": 20}, {"best_epoch": 7}) == {
        "epochs": 7,
        "min_epochs": 1,
        "early_stopping": False,
        "eval_every": 7,
        "min_steps": None,
        "reference_steps_per_epoch": None,  # the twin's best epoch is already scaled to the log
        "refit": False,  # its validation items are training items already
    }
    cache = tmp_path / "cache"
    split = {"target_training": "whole", "query_fraction": 1.0}
    spec, data = prepare_target({"name": "synthetic"}, split, TINY_BPR, 10, None, str(cache))
    files = sorted(p.name for p in cache.rglob("*.pt"))
    assert len(files) == 2  # the leave-one-out twin and the whole target, each cached
    half = load_dataset("synthetic")
    assert data.train.num_interactions > leave_one_out(data.train).train.num_interactions  # every interaction trained
    assert "test_ranks" not in data.target_metrics and "test" not in data.target_metrics and "fit" in data.target_metrics
    assert data.target_metrics["guard"]["target_lift"] > 0  # measured on the twin, whose test items are held out
    assert data.target_metrics["train"]["epochs_run"] == data.target_metrics["train"]["best_epoch"]  # the twin's, all run
    for user in range(20):  # answers exclude everything the user did
        seen = set(data.train.items[data.train.indptr[user] : data.train.indptr[user + 1]].tolist())
        assert not seen & set(data.truth_lists[user].tolist())
    _, again = prepare_target({"name": "synthetic"}, split, TINY_BPR, 10, None, str(cache))
    assert sorted(p.name for p in cache.rglob("*.pt")) == files  # both from the cache the second time
    run = expand_runs(_experiment(split))[0]
    row = execute_run(run, again, in_process_oracle(spec).register_attacker("paper"))
    assert row["target_training"] == "whole" and row["query_fraction"] == 1.0
    assert row["queried_users"] == row["known_users"] and np.isnan(row["agr@k/heldout"])
    assert np.isnan(row["target_recall@k"]) and np.isnan(row["target_test_ndcg@10_full"])
    assert 0.0 <= row["agr@k"] <= 1.0 and half.num_users > data.train.num_users
