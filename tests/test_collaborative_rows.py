"""Collaborative result rows: the head / tail breakdown (DESIGN.md: one row per run with Agr@K
and its head/tail breakdown; every known user in exactly one group, by history length in the
target's log, the group size set by ``split.head_fraction``), and a catalogue under 10 items."""

from __future__ import annotations

import pytest

from raysteal.data.splits import head_tail_groups
from raysteal.errors import ConfigError
from raysteal.experiment.config import parse_experiment
from raysteal.experiment.execute import build_knowledge, execute_run
from raysteal.experiment.run import expand_runs
from raysteal.oracle import TargetSpec, in_process_oracle
from tests.oracle_fixtures import untrained_run_data


@pytest.fixture(scope="module")
def world():
    return untrained_run_data(20, num_users=300, num_items=120, max_len=40, seed=4)


def _run(head_fraction=None, attack: dict | None = None, defenses: list | None = None):
    split = {"attacker_fraction": 0.5, **({} if head_fraction is None else {"head_fraction": head_fraction})}
    spec = parse_experiment(
        {
            "experiment": "ht",
            "seeds": 1,
            "datasets": [{"name": "synthetic"}],
            "targets": [{"model": "bpr"}],
            "attacks": [attack or {"attack": "popularity"}],
            "split": split,
            "k": 20,
            **({} if defenses is None else {"defenses": [defenses]}),
        }
    )
    return expand_runs(spec)[0]


@pytest.mark.parametrize("fraction", [None, 0.5])
def test_collaborative_rows_split_the_known_users_into_head_and_tail(world, fraction):
    target, loo, data = world
    run = _run(fraction)
    row = execute_run(run, data, in_process_oracle(TargetSpec.from_training_log(target, loo.train)).register_attacker("ht"))
    known = build_knowledge(run, data).target_user_ids
    head = head_tail_groups(loo.train.user_lengths, fraction or 0.2).is_head[known]
    assert row["head_users"] == int(head.sum()) and 0 < row["head_users"] < len(known)
    # the two groups partition the known users: their weighted mean is agr@k/all
    whole = (row["agr@k/head"] * head.sum() + row["agr@k/tail"] * (~head).sum()) / len(known)
    assert whole == pytest.approx(row["agr@k/all"])
    assert row["agr@k/head"] != pytest.approx(row["agr@k/tail"])  # popularity copies heavy users differently


def test_head_fraction_is_checked_and_stays_out_of_the_run_id_at_its_default():
    from raysteal.experiment.run import identity_spec
    from raysteal.results.store import run_id

    run = _run()
    before = {**run.spec, "split": {key: v for key, v in run.spec["split"].items() if key != "head_fraction"}}
    assert run.id == run_id(identity_spec(before)) != _run(0.5).id  # finished runs of earlier versions stay finished
    with pytest.raises(ConfigError, match="head_fraction"):
        _run(1.0)


def test_a_catalogue_smaller_than_ten_items_is_scored_on_what_it_has():
    target, loo, data = untrained_run_data(5, num_users=120, num_items=8, num_clusters=2, max_len=6, seed=1)
    spec = parse_experiment(
        {
            "experiment": "tiny",
            "seeds": 1,
            "datasets": [{"name": "synthetic"}],
            "targets": [{"model": "bpr"}],
            "attacks": [{"attack": "popularity"}],
            "split": {"attacker_fraction": 0.5},
            "k": 5,
        }
    )
    row = execute_run(
        expand_runs(spec)[0], data, in_process_oracle(TargetSpec.from_training_log(target, loo.train)).register_attacker("tiny")
    )
    assert 0.0 <= row["agr@k"] <= 1.0 and 0.0 <= row["agr@10"] <= 1.0


def test_a_zero_budget_is_refused_for_attacks_that_query():
    spec = {"experiment": "zero", "seeds": 1, "datasets": [{"name": "synthetic"}], "targets": [{"model": "bpr"}], "k": 20, "budget": 0}
    for attack in ("ptq", "qsd", "ptaq"):
        with pytest.raises(ConfigError, match=f"budget: 0 leaves '{attack}' no query"):
            parse_experiment({**spec, "attacks": [{"attack": attack}]})
    assert parse_experiment({**spec, "attacks": [{"attack": "ptd"}, {"attack": "pta"}, {"attack": "popularity"}]})


def test_a_budget_that_cuts_the_queries_counts_only_the_answered_users_as_queried(world):
    """Issue 24 item 4: under a budget shorter than the planned queries only a random subset of
    the query users is answered; agr@k and agr@10 are scored on those, and the others are held out."""
    from raysteal.experiment.execute import EpochProbe

    target, loo, data = world
    run = _run(attack={"attack": "ptq", "epochs": 1, "finetune_epochs": 1})
    knowledge = build_knowledge(run, data)
    planned = len(knowledge.query_users)
    oracle = in_process_oracle(TargetSpec.from_training_log(target, loo.train))
    budget = planned // 3
    row = execute_run(run, data, oracle.register_attacker("cut", budget=budget))
    assert row["queried_users"] == budget  # not the planned ones: only answered lists count
    assert row["queries"] == budget and row["planned_queried_users"] == planned
    full = execute_run(run, data, oracle.register_attacker("whole"))
    assert full["queried_users"] == full["planned_queried_users"] == planned
    # the Tune probe counts the same users once the answers are in (the fine-tuning epoch)
    probe, seen = EpochProbe(run, data), []
    again = execute_run(run, data, oracle.register_attacker("probed", budget=budget), on_epoch=lambda e, stats: seen.append(stats))
    assert again["agr@k"] == pytest.approx(row["agr@k"])  # the same seed draws the same answered users
    answered = seen[-1]["answered_users"]
    assert answered is not None and len(answered) == budget
    measured = probe(seen[-1])
    assert measured["agr@k"] == pytest.approx(row["agr@k"]) and measured["agr@k/heldout"] == pytest.approx(row["agr@k/heldout"])


def test_served_agreement_scores_the_lists_the_defended_black_box_serves(world):
    """agr@k/served: the clone against the lists the black box serves (its defenses applied to
    the true lists, seeded), on the queried users; agr@k stays the true lists'. Without a defense
    the two agree; with popular-item mixing n of the 20 items are popular picks (Zhu et al. §6)."""
    import numpy as np

    from raysteal.attacks import run_attack
    from raysteal.experiment.execute import clone_lists, served_lists
    from raysteal.metrics import agreement_at_k

    target, loo, data = world
    oracle = in_process_oracle(TargetSpec.from_training_log(target, loo.train))
    plain = execute_run(_run(), data, oracle.register_attacker("plain"))
    assert plain["agr@k/served"] == plain["agr@k"]
    mixing = _run(defenses=[{"type": "popular_mixing", "n": 10}])
    mixed = execute_run(mixing, data, oracle.register_attacker("mixed"))
    assert mixed["agr@k"] == plain["agr@k"]  # the true lists did not change
    knowledge = build_knowledge(mixing, data)
    users = knowledge.target_user_ids
    truth = data.truth_lists[users][:, :20]
    served = served_lists(mixing, data, truth)
    changed = served != truth
    assert changed.sum(axis=1).max() <= 10 and changed.sum(axis=1).mean() > 5
    popular = np.argsort(-data.train.item_counts, kind="stable")[:100]
    assert np.isin(served[changed], popular).all()
    queried = np.zeros(len(users), dtype=bool)
    queried[knowledge.query_users] = True
    clone = run_attack(mixing.attack, knowledge, oracle.register_attacker("again"), seed=mixing.seed).clone
    want = np.asarray(agreement_at_k(served, clone_lists(clone, knowledge, 20, "cpu")))[queried].mean()
    assert mixed["agr@k/served"] == pytest.approx(want) and mixed["agr@k/served"] != pytest.approx(mixed["agr@k"])
