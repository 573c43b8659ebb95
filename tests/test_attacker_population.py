"""BAHSD's long-tailed setting: an attacker population user-disjoint from the scored users, and
the search / report halves of the scored users (issue 22, item 2)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from raysteal.data.interactions import Interactions
from raysteal.experiment.execute_sequential import attacker_population, known_users, scored_users
from raysteal.experiment.run import Run


def _data(num_users: int = 400):
    users = np.repeat(np.arange(num_users), 3)
    log = Interactions(users=users, items=np.arange(len(users)) % 50, num_users=num_users, num_items=50, name="toy")
    return SimpleNamespace(train=log, eval_users=np.arange(0, num_users, 2))  # every other user is evaluable


def _run(seed: int = 0, attack: dict | None = None, **split) -> Run:
    return Run.from_spec(
        {
            "experiment": "population",
            "dataset": {"name": "synthetic"},
            "target": {"model": "sasrec"},
            "attack": attack or {"attack": "dfme", "budget_queries": 10},
            "defenses": [],
            "split": {"attacker_fraction": 0.3, "target_seed": 0, **split},
            "k": 10,
            "budget": None,
            "query_cache": False,
            "seed": seed,
        }
    )


def test_without_a_population_nothing_changes():
    data = _data()
    assert attacker_population(_run(), data) is None
    assert scored_users(_run(), data).all()


def test_the_population_is_fixed_by_the_target_seed_and_never_scored():
    data = _data()
    population = attacker_population(_run(attacker_population=0.5), data)
    assert len(population) == 200
    assert np.array_equal(population, attacker_population(_run(seed=7, attacker_population=0.5), data))  # not the run seed
    assert not np.array_equal(population, attacker_population(_run(attacker_population=0.5, target_seed=1), data))
    keep = scored_users(_run(attacker_population=0.5), data)
    assert not np.isin(data.eval_users[keep], population).any()
    assert keep.sum() == (~np.isin(data.eval_users, population)).sum()


def test_the_attacker_holds_its_share_of_the_population_drawn_per_seed():
    data = _data()
    population = attacker_population(_run(attacker_population=0.5), data)
    for fraction, size in ((0.1, 20), (0.3, 60), (1.0, 200)):
        held = known_users(_run(attacker_population=0.5, attacker_fraction=fraction), data)
        assert len(held) == size and np.isin(held, population).all()
    assert not np.array_equal(known_users(_run(0, attacker_population=0.5), data), known_users(_run(1, attacker_population=0.5), data))


def test_search_and_report_halves_partition_the_scored_users():
    data = _data()
    split = {"attacker_population": 0.5}
    everyone = scored_users(_run(**split), data)
    search = scored_users(_run(**split, scored_users="search"), data)
    report = scored_users(_run(**split, scored_users="report"), data)
    assert not (search & report).any() and np.array_equal(search | report, everyone)
    assert 0.35 < search.sum() / everyone.sum() < 0.65
    assert np.array_equal(search, scored_users(_run(5, **split, scored_users="search"), data))  # the same for every seed


def test_the_tune_probe_never_scores_the_users_a_real_data_attacker_trained_on():
    from raysteal.experiment.execute_sequential import SequentialEpochProbe

    data = _data()
    users = len(data.eval_users)
    data.eval_sequences = np.zeros((users, 4), dtype=np.int64)
    data.teacher_lists = np.zeros((users, 10), dtype=np.int64)
    data.head_mask = lambda fraction: np.zeros(users, dtype=bool)
    real = _run(attacker_fraction=0.5, attack={"attack": "seq_ptd"})  # no population: Zhu et al.'s protocol
    rows = SequentialEpochProbe(real, data, max_users=10_000).rows
    known = known_users(real, data)
    assert len(rows) and not np.isin(data.eval_users[rows], known).any()
    assert len(rows) == (~np.isin(data.eval_users, known)).sum()
    free = _run(attacker_fraction=0.5, attack={"attack": "dfme", "budget_queries": 10})  # data-free: everyone
    assert len(SequentialEpochProbe(free, data, max_users=10_000).rows) == users
    population = _run(attack={"attack": "bahsd", "source": "real"}, attacker_population=0.5, scored_users="search")
    rows = SequentialEpochProbe(population, data, max_users=10_000).rows
    assert np.array_equal(rows, np.flatnonzero(scored_users(population, data)))
