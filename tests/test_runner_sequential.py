"""``raysteal run`` against a sequential target: DFME, BAHSD and the popularity floor on Ray."""

from __future__ import annotations

import numpy as np
import pytest

from raysteal.errors import ConfigError
from raysteal.experiment.config import parse_experiment
from raysteal.experiment.run import expand_runs

SEQ = {
    "experiment": "tiny-seq",
    "seeds": 1,
    "datasets": [{"name": "synthetic", "options": {"num_users": 300, "num_items": 120, "max_len": 30, "seed": 3}}],
    "targets": [
        {
            "model": "sasrec",
            "params": {"max_len": 20, "embedding_dim": 16, "num_blocks": 1},
            "train": {"epochs": 6, "batch_size": 64, "lr": 3e-3},
        }
    ],
    "attacks": [
        {"attack": "popularity"},
        {
            "attack": "dfme",
            "budget_queries": 600,
            "k": 20,
            "epochs": 6,
            "batch_size": 64,
            "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1},
        },
        {
            "attack": "bahsd",
            "budget_queries": 600,
            "k": 20,
            "epochs": 6,
            "batch_size": 64,
            "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1},
        },
        {"attack": "seq_ptq", "k": 20, "epochs": 4, "batch_size": 64, "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1}},
    ],
    "split": {"aux_fraction": 0.0, "attacker_fraction": 0.2},
    "k": 10,
}


def test_sequential_attacks_keep_their_own_list_length():
    runs = expand_runs(parse_experiment(SEQ))
    assert [r.spec["attack"].get("k") for r in runs] == [None, 20, 20, 20]  # not overwritten by K=10


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"attacks": [{"attack": "dfmx"}]}, "dfmx"),
        ({"attacks": [{"attack": "dfme", "budget_querys": 5}]}, "budget_querys"),
        ({"attacks": [{"attack": "popularity", "epochs": 3}]}, "popularity"),
        ({"split": {"aux_fraction": 1.0}}, "split.aux_fraction"),
    ],
)
def test_bad_sequential_experiment_fails_before_work(patch, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_experiment({**SEQ, **patch})


@pytest.mark.ray
def test_sequential_run_writes_head_tail_rows(ray_session, tmp_path):
    from raysteal.distributed.experiment_runner import run_experiment

    config = parse_experiment(SEQ)
    store = run_experiment(config, tmp_path / "out", cache_dir=str(tmp_path / "cache"), progress=False)
    frame = store.load().set_index("attack")
    assert set(frame.index) == {"popularity", "dfme", "bahsd", "seq_ptq"}
    for col in ["agr@1", "agr@10", "agr@10/head", "agr@10/tail", "student_ndcg@10", "teacher_ndcg@10", "agr@k", "queries", "wall_s"]:
        assert col in frame.columns, col
        assert np.isfinite(frame[col].astype(float)).all(), col
    assert frame.loc["popularity", "queries"] == 0
    assert frame.loc["dfme", "queries"] == 600 and frame.loc["bahsd", "queries"] <= 600
    # the teacher's own accuracy is the same in every data-free row (same target, same users)
    assert frame.loc[["popularity", "dfme", "bahsd"], "teacher_ndcg@10"].nunique() == 1
    # data-free attackers are scored on every evaluable user; seq_ptq never on the users it knows
    assert frame.loc["seq_ptq", "eval_users"] < frame.loc["dfme", "eval_users"]
    # ... and every attack is also scored on those known users (Zhu et al.'s Table 8 protocol):
    # the same users for all, and the ones seq_ptq's eval users leave out
    assert frame["known_users"].nunique() == 1
    assert frame.loc["seq_ptq", "eval_users"] + frame.loc["seq_ptq", "known_users"] == frame.loc["dfme", "eval_users"]
    for col in ("agr@k/known", "agr@10/known"):
        assert np.isfinite(frame[col].astype(float)).all(), col
    # resume: nothing left to do
    again = run_experiment(config, tmp_path / "out", cache_dir=str(tmp_path / "cache"), progress=False)
    assert len(again.load()) == 4
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "out" / "results.parquet")) == 4  # every row in one readable file
    # a DFME run that spent its budget and died before its row landed is retried with the whole
    # budget, on a fresh account; the query log keeps both attempts
    dfme_id = frame.loc["dfme", "run_id"]
    (tmp_path / "out" / "runs" / f"{dfme_id}.parquet").unlink()
    retried = run_experiment(config, tmp_path / "out", cache_dir=str(tmp_path / "cache"), progress=False)
    rows = retried.load().set_index("attack")
    assert rows.loc["dfme", "queries"] == 600
    logs = retried.load_query_logs()
    spent = logs[logs["granted"]].groupby("attacker")["count"].sum()
    assert spent[dfme_id] == 600 and spent[f"{dfme_id}@1"] == 600


def _tiny_sequential_data(max_len: int = 8):
    """A SequentialRunData for an untrained SASRec on the toy log (plumbing, not accuracy)."""
    from model_fixtures import toy_log

    from raysteal.data.interactions import Interactions
    from raysteal.data.splits import leave_one_out
    from raysteal.experiment.context import SequentialRunData
    from raysteal.oracle import RankingEngine
    from raysteal.training import seeded_model

    log = toy_log(num_users=80, num_items=40, seed=1)
    split = leave_one_out(log)
    model = seeded_model({"model": "sasrec", "embedding_dim": 8, "max_len": max_len}, log.num_users, log.num_items, seed=0).eval()
    users = split.evaluable_users
    sequences = log.padded_sequences(max_len + 1, users)[:, :-1]
    empty = Interactions(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0, log.num_items)
    data = SequentialRunData(
        dataset="toy",
        target_name="sasrec",
        train=split.train,
        auxiliary=empty,
        eval_users=users,
        eval_sequences=sequences,
        test_items=split.test[users],
        teacher_lists=np.asarray(RankingEngine(model).topk(sequences, 20)),
        user_lengths=log.user_lengths,
        item_popularity=split.train.item_counts,
        max_len=max_len,
    )
    return model, data


def _run_in_process(attack: dict, budget: int, **experiment):
    """``(data, row, queries charged)`` of one sequential run of ``attack`` against the tiny
    target, in this process (``experiment``: top-level keys over ``SEQ``)."""
    from raysteal.experiment.execute_sequential import execute_sequential_run
    from raysteal.oracle import TargetSpec, in_process_oracle

    model, data = _tiny_sequential_data()
    (run,) = expand_runs(parse_experiment({**SEQ, "attacks": [attack], **experiment}))
    oracle = in_process_oracle(TargetSpec(model=model), device="cpu")
    try:
        client = oracle.register_attacker(attack["attack"], budget=budget)
        return data, execute_sequential_run(run, data, client), client.spent
    finally:
        oracle.close()


def test_bahsd_on_real_sequences_gets_the_attackers_users_from_the_runner():
    """``source: real`` in an experiment file: the runner hands BAHSD the known users' sequences
    (and scores everyone else), as it does for Zhu et al.'s attacks."""
    attack = {
        "attack": "bahsd",
        "source": "real",
        "budget_queries": 150,
        "k": 10,
        "epochs": 1,
        "batch_size": 16,
        "student": {"model": "sasrec", "embedding_dim": 8},
    }
    data, row, spent = _run_in_process(attack, 150, split={"aux_fraction": 0.0, "attacker_fraction": 0.25})
    assert row["known_users"] > 0 and row["eval_users"] + row["known_users"] == len(data.eval_users)
    assert 0 < row["queries"] == spent <= 150
    assert np.isfinite(row["agr@10/tail"]) and np.isfinite(row["agr@k/known"])


def test_the_popularity_floor_lists_the_most_popular_unseen_items_in_order():
    from types import SimpleNamespace

    from raysteal.experiment.execute_sequential import popularity_lists

    data = SimpleNamespace(item_popularity=np.array([5, 9, 1, 7, 3, 9]))  # ties keep the lower id first
    sequences = np.array([[-1, -1, 1], [5, 3, 0], [-1, -1, -1]])
    lists = popularity_lists(data, sequences, 3)
    assert lists.tolist() == [[5, 3, 0], [1, 4, 2], [1, 5, 3]]


def test_split_head_fraction_sets_the_sequential_head_group():
    from raysteal.data.splits import head_tail_groups
    from raysteal.experiment.execute_sequential import execute_sequential_run

    _, data = _tiny_sequential_data()
    heads = {}
    for fraction in (0.2, 0.5):
        config = parse_experiment({**SEQ, "attacks": [{"attack": "popularity"}], "split": {"aux_fraction": 0.0, "head_fraction": fraction}})
        (run,) = expand_runs(config)
        row = execute_sequential_run(run, data, client=None)
        expected = head_tail_groups(data.user_lengths, fraction).is_head[data.eval_users]
        assert row["head_users"] == int(expected.sum())
        heads[fraction] = row["head_users"]
    assert heads[0.2] < heads[0.5]


def test_a_sequential_catalogue_under_ten_items_is_refused_before_any_run():
    from types import SimpleNamespace

    from raysteal.distributed.deploy import sequential_run_data
    from raysteal.training import seeded_model

    model = seeded_model({"model": "sasrec", "embedding_dim": 4, "max_len": 5}, 0, 8, seed=0)
    with pytest.raises(ConfigError, match="at least 10 items; this catalogue has 8"):
        sequential_run_data(SimpleNamespace(label="tiny"), None, None, model, {}, 10, "cpu")


def test_a_zero_budget_is_refused_for_attacks_that_query():
    with pytest.raises(ConfigError, match="budget: 0 leaves 'dfme' no query"):
        parse_experiment({**SEQ, "budget": 0})
    no_queries = [{"attack": "popularity"}, {"attack": "seq_ptd", "epochs": 1, "student": {"model": "sasrec", "embedding_dim": 16}}]
    assert len(expand_runs(parse_experiment({**SEQ, "attacks": no_queries, "budget": 0}))) == 2


def test_dfme_with_query_cache_is_charged_only_for_what_it_did_not_remember():
    attack = {
        "attack": "dfme",
        "budget_queries": 400,
        "max_len": 4,
        "k": 10,
        "epochs": 1,
        "batch_size": 16,
        "student": {"model": "sasrec", "embedding_dim": 8},
    }
    _, row, spent = _run_in_process(attack, 400, query_cache=True)
    # 100 sequences start from one of 40 items: their first prefixes repeat
    assert row["cache_hits"] > 0 and row["queries"] == spent == 400 - row["cache_hits"]


def test_a_sequential_targets_rows_carry_what_a_serving_defense_costs_its_users():
    """The teacher's own NDCG@k on the evaluation users' next items, undefended and behind the
    chain (the attack x defense matrix's Pareto plot places sequential defenses with it)."""
    from raysteal.experiment.execute_sequential import SEQUENTIAL
    from raysteal.oracle import TargetSpec

    model, data = _tiny_sequential_data()
    spec = TargetSpec(model=model, item_popularity=data.item_popularity)
    spec.defenses = []
    clean = SEQUENTIAL.cost_columns(spec, data, 10)
    assert clean["target_ndcg@k/defended"] == pytest.approx(clean["target_ndcg@k/all_users"])
    spec.defenses = [{"type": "truncate", "max_items": 2}]
    cut = SEQUENTIAL.cost_columns(spec, data, 10)
    assert cut["target_ndcg@k/all_users"] == pytest.approx(clean["target_ndcg@k/all_users"])
    assert cut["target_recall@k/defended"] <= clean["target_recall@k/defended"]


def test_a_clone_of_a_watermarked_target_is_put_to_the_verify_test_in_its_row():
    """Issue 28: a run against a watermarked target says whether the owner could prove the theft
    (``raysteal verify``'s test on the clone); a run against a clean target has no such columns."""
    from raysteal.watermark import DEFAULT_ALPHA

    attack = {
        "attack": "dfme",
        "budget_queries": 200,
        "k": 20,
        "epochs": 1,
        "batch_size": 16,
        "student": {"model": "sasrec", "embedding_dim": 8},
    }
    target = {**SEQ["targets"][0], "watermark": {"key": 77, "sequences": 2, "length": 5, "copies": 3}}
    _, row, _ = _run_in_process(attack, 200, targets=[target])
    assert row["watermark_trials"] == 2 * 4 and 0 <= row["watermark_hits"] <= row["watermark_trials"]
    assert 0.0 < row["watermark_p_value"] <= 1.0 and 0.0 <= row["watermark_decoy_hit_rate"] <= 1.0
    assert row["carries_watermark"] == (row["watermark_p_value"] < DEFAULT_ALPHA)
    _, clean, _ = _run_in_process(attack, 200)
    assert not any(key.startswith("watermark_") for key in clean) and "carries_watermark" not in clean


@pytest.mark.ray
def test_zhu_runs_of_one_seed_share_their_data_phases(ray_session, tmp_path):
    """PTD and PTQ of one seed train the same data phases (they never see the target): the runner
    hands its cache to the recipe, PTQ (run second) loads what PTD trained, one file for both."""
    from raysteal.distributed.experiment_runner import run_experiment

    student = {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1}
    zhu = {"k": 20, "epochs": 2, "batch_size": 64, "data_epochs": 2, "student": student}
    config = parse_experiment({**SEQ, "attacks": [{"attack": "seq_ptd", **zhu}, {"attack": "seq_ptq", **zhu}]})
    store = run_experiment(config, tmp_path / "out", cache_dir=str(tmp_path / "cache"), progress=False, max_concurrent=1)
    frame = store.load().set_index("attack")
    assert not frame.loc["seq_ptd", "info/phases_shared"] and frame.loc["seq_ptq", "info/phases_shared"]
    assert frame.loc["seq_ptd", "info/data_seconds"] == frame.loc["seq_ptq", "info/data_seconds"]  # the phases PTD trained
    assert len(list((tmp_path / "cache" / "phases").glob("*.pt"))) == 1
