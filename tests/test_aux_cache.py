"""Sharing the auxiliary model between runs changes nothing but the time spent."""

from __future__ import annotations

import numpy as np

from raysteal.data import load_dataset, split_target_auxiliary
from raysteal.data.splits import leave_one_out
from raysteal.experiment.config import parse_experiment
from raysteal.experiment.context import RunData
from raysteal.experiment.execute import execute_run
from raysteal.experiment.run import expand_runs
from raysteal.oracle import RankingEngine, TargetSpec, in_process_oracle
from raysteal.training import fit, make_train_config, seeded_model


def test_cached_auxiliary_model_gives_the_same_row(tmp_path):
    log = load_dataset("synthetic", num_users=300, num_items=200, max_len=40, seed=2)
    halves = split_target_auxiliary(log, seed=0)
    loo = leave_one_out(halves.target)
    target = seeded_model({"model": "bpr", "embedding_dim": 16}, loo.train.num_users, loo.train.num_items, seed=0)
    fit(target, loo, make_train_config(epochs=3, batch_size=256), seed=0, progress=False)
    truth = RankingEngine(target, loo.train.indptr, loo.train.items).topk(np.arange(loo.train.num_users), 20)
    data = RunData("synthetic", "bpr", loo.train, loo.test, halves.auxiliary, truth)
    spec = parse_experiment(
        {
            "experiment": "aux",
            "seeds": 1,
            "datasets": [{"name": "synthetic"}],
            "targets": [{"model": "bpr"}],
            "attacks": [{"attack": "pta", "epochs": 5, "aux_epochs": 5, "embedding_dim": 16, "batch_size": 256}],
            "split": {"attacker_fraction": 0.3},
            "k": 20,
        }
    )
    run = expand_runs(spec)[0]

    def row(cache):
        oracle = in_process_oracle(TargetSpec.from_training_log(target, loo.train))
        return execute_run(run, data, oracle.register_attacker("a"), aux_cache=cache)

    plain = row(None)
    first = row(str(tmp_path))
    assert len(list((tmp_path / "auxiliary").glob("*.pt"))) == 1
    second = row(str(tmp_path))  # loaded from the cache
    assert plain["agr@k"] == first["agr@k"] == second["agr@k"]
    assert plain["agr@k/heldout"] == second["agr@k/heldout"]
