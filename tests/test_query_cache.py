"""The attacker's answer memory (``query_cache``): repeated rows are answered from memory and never
charged, fresh rows go to the black box in one request, inputs are checked as the black box
checks them, and experiment rows report the hits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raysteal.errors import ConfigError
from raysteal.oracle import QueryBudgetExceeded, TargetSpec, in_process_oracle
from raysteal.oracle.cache import CachingClient
from raysteal.oracle.protocol import BlackBoxClient
from raysteal.training import seeded_model
from tests.oracle_fixtures import bpr_target, random_log, untrained_run_data


@pytest.fixture()
def oracle():
    log = random_log()
    return in_process_oracle(TargetSpec.from_training_log(bpr_target(log), log))


def test_the_client_and_its_cache_answer_what_an_attack_may_ask(oracle):
    """``BlackBoxClient`` is the whole seam: the oracle's client and the cache both provide it."""
    members = {name for name in vars(BlackBoxClient) if not name.startswith("_")}
    assert members == {"query", "remaining_budget", "spent", "num_items", "info"}
    plain = oracle.register_attacker("seam", budget=5)
    cached = CachingClient(plain)
    for client in (plain, cached):
        assert client.remaining_budget == 5 and client.spent == 0 and client.attacker_id == "seam"
        assert client.num_items == client.info.num_items == oracle.info.num_items
    assert cached.query([1], 3).shape == plain.query([1], 3).shape == (1, 3)
    assert cached.query([1], 3).shape == (1, 3)  # from memory
    assert plain.spent == cached.spent == 2 and cached.remaining_budget == 3


def test_repeated_rows_are_answered_from_memory_uncharged(oracle):
    plain = oracle.register_attacker("plain")
    client = CachingClient(oracle.register_attacker("cached", budget=6))
    first = client.query([3, 4, 5], 10)
    assert client.spent == 3 and client.hits == 0
    again = client.query(np.array([5, 3, 9, 9]), 10)  # two remembered rows, one new row asked twice
    assert client.spent == 4 and client.hits == 3
    np.testing.assert_array_equal(again, plain.query([5, 3, 9, 9], 10))
    np.testing.assert_array_equal(first, plain.query([3, 4, 5], 10))
    assert client.query([4], 5).shape == (1, 5) and client.spent == 5  # another k is another question
    client.query([3, 4, 5, 9], 10)  # all remembered: no request at all, so no budget needed
    assert client.spent == 5 and client.remaining_budget == 1
    with pytest.raises(QueryBudgetExceeded):  # two new rows, one query left: nothing answered or charged
        client.query([3, 11, 12], 10)
    assert client.spent == 5


def test_inputs_are_checked_as_the_black_box_checks_them(oracle):
    client = CachingClient(oracle.register_attacker("checked"))
    client.query([1, 2], 4)
    with pytest.raises(ConfigError, match="integer ids"):
        client.query([1.0, 2.0], 4)  # would otherwise be a hit
    with pytest.raises(ConfigError, match="1-d list"):
        client.query([[1, 2]], 4)
    assert client.spent == 2


def test_sequences_are_remembered_by_their_items():
    torch.manual_seed(0)
    model = seeded_model({"model": "sasrec", "max_len": 6, "embedding_dim": 8}, 0, 30, seed=0).eval()
    oracle = in_process_oracle(TargetSpec(model=model))
    try:
        client = CachingClient(oracle.register_attacker("seq"))
        a = client.query([[1, 2, 3], [4]], 5)
        b = client.query(np.array([[-1, 1, 2, 3], [-1, -1, -1, 7]]), 5)  # the same first sequence, padded
        assert client.spent == 3 and client.hits == 1
        np.testing.assert_array_equal(a[0], b[0])
    finally:
        oracle.close()


def test_an_experiment_with_query_cache_reports_its_hits():
    from raysteal.experiment.config import parse_experiment
    from raysteal.experiment.execute import execute_run
    from raysteal.experiment.run import expand_runs, identity_spec
    from raysteal.results.store import run_id

    target, loo, data = untrained_run_data(20, num_users=200, num_items=80, max_len=20, seed=1)
    spec = {
        "experiment": "cache",
        "seeds": 1,
        "datasets": [{"name": "synthetic"}],
        "targets": [{"model": "bpr"}],
        "k": 20,
        "attacks": [{"attack": "qsd", "epochs": 1, "finetune_epochs": 1}],
        "split": {"attacker_fraction": 0.3},
    }
    (plain,) = expand_runs(parse_experiment(spec))
    (cached,) = expand_runs(parse_experiment({**spec, "query_cache": True}))
    assert plain.id == run_id(identity_spec({k: v for k, v in plain.spec.items() if k != "query_cache"})) != cached.id
    oracle = in_process_oracle(TargetSpec.from_training_log(target, loo.train))
    row = execute_run(cached, data, oracle.register_attacker("q"))
    assert row["cache_hits"] == 0 and row["queries"] > 0  # QSD asks each known user once: nothing to remember
    assert "cache_hits" not in execute_run(plain, data, oracle.register_attacker("p"))
