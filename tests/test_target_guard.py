"""The popularity guard (issue 25, items 1 and 4): every target beside popularity on the same users
and protocol, the lift in result rows, warning and refusal, ``agr@k/lift``, one accuracy protocol."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from raysteal.data import load_dataset, split_target_auxiliary
from raysteal.data.interactions import Interactions
from raysteal.data.splits import leave_one_out
from raysteal.errors import ConfigError
from raysteal.training import guard
from raysteal.training.evaluate import append_items, evaluate, held_out_ranks, seen_csr


def _log(num_users=60, num_items=40, per_user=6, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(num_users), per_user)
    items = np.concatenate([rng.choice(num_items, per_user, replace=False) for _ in range(num_users)])
    return Interactions(
        users=users, items=items, num_users=num_users, num_items=num_items, timestamps=np.tile(np.arange(per_user), num_users)
    )


class _Scores(torch.nn.Module):
    """A collaborative model with fixed scores ``[num_users, num_items]``."""

    sequential = False

    def __init__(self, scores: np.ndarray):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(scores, dtype=torch.float32))
        self.num_items = self.table.shape[1]

    def score(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.table[inputs]


def test_popularity_scores_are_distinct_and_break_ties_by_the_lower_item_id():
    scores = guard.popularity_scores(np.array([3, 5, 3, 0, 5]))
    assert list(np.argsort(-scores, kind="stable")) == [1, 4, 0, 2, 3]
    assert len(set(scores.tolist())) == 5


def test_popularity_lists_exclude_each_users_training_items():
    log = _log()
    loo = leave_one_out(log)
    lists = guard.popularity_lists(loo.train, np.array([0, 7]), k=5)
    order = np.argsort(-guard.popularity_scores(loo.train.item_counts), kind="stable")
    for row, user in zip(lists, (0, 7)):
        seen = set(loo.train.items[loo.train.indptr[user] : loo.train.indptr[user + 1]].tolist())
        assert list(row) == [i for i in order if i not in seen][:5]


def test_a_popularity_target_has_lift_one_and_an_oracle_a_large_one():
    loo = leave_one_out(_log())
    popular = guard.PopularityRecommender(loo.train.item_counts)
    figures, ranks = guard.guard_figures(popular, loo)
    assert figures["target_lift"] == pytest.approx(1.0)
    for name in guard.FIGURES:
        assert figures[f"target_{name}"] == figures[f"popularity_{name}"]
    assert ranks.shape == (loo.train.num_users,) and (ranks[loo.test < 0] == -1).all()
    oracle = np.zeros((loo.train.num_users, loo.train.num_items), dtype=np.float32)
    users = loo.evaluable_users
    oracle[users, loo.test[users]] = 1.0  # the test item first, everything else tied below it
    figures, ranks = guard.guard_figures(_Scores(oracle), loo)
    assert figures["target_ndcg@10_full"] == 1.0 and figures["target_hr@10_100neg"] == 1.0
    assert figures["target_lift"] > 1.2 and (ranks[users] == 0).all()
    assert figures["users"] == users.size


def test_lift_edges_and_thresholds():
    assert guard.lift(0.2, 0.1) == pytest.approx(2.0)
    assert guard.lift(0.1, 0.0) == math.inf and math.isnan(guard.lift(0.0, 0.0))
    assert guard.below({"target_lift": 1.1}, 1.2) and not guard.below({"target_lift": 1.3}, 1.2)
    assert not guard.below({"target_lift": 0.5}, None)
    assert guard.below({"target_lift": float("nan")}, 1.2)  # nothing learnt by either: under any threshold


def _figures(lift: float) -> dict:
    base = {"users": 10, "target_lift": lift}
    for name in guard.FIGURES:
        base[f"target_{name}"] = 0.1 * lift
        base[f"popularity_{name}"] = 0.1
    return base


class _Data:
    def __init__(self, figures):
        self.target_metrics = {"guard": figures}


def test_the_runner_reports_warns_and_refuses_naming_target_and_dataset():
    from raysteal.distributed.deploy import guard_target

    said: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert guard_target(_Data(_figures(1.1)), "bpr on ml-100k", 1.2, None, said.append) is None
    (line,) = said
    assert "bpr on ml-100k" in line and "popularity" in line and "lift 1.10x" in line
    assert "NDCG@10 0.1100" in line and "100 neg" in line and "full" in line
    (warning,) = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert "bpr on ml-100k" in str(warning.message) and "1.2x" in str(warning.message)
    refusal = guard_target(_Data(_figures(1.1)), "bpr on ml-100k", 1.2, 1.5, lambda _: None)
    assert refusal is not None and "\n" not in refusal
    assert "bpr on ml-100k not attacked" in refusal and "1.5x" in refusal
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a target above both thresholds: neither warning nor refusal
        assert guard_target(_Data(_figures(2.0)), "bpr on ml-100k", 1.2, 1.5, lambda _: None) is None
    assert guard_target(object(), "x", 1.2, 1.5, lambda _: None) is None  # no guard figures: nothing to say


def test_row_columns_carry_the_lift_and_the_popularity_figures_of_the_same_users():
    cols = guard.row_columns(_figures(2.0))
    assert cols["target_lift"] == 2.0
    assert cols["popularity_test_ndcg@10_full"] == 0.1 and cols["target_test_ndcg@10_100neg"] == pytest.approx(0.2)
    assert set(cols) == {"target_lift"} | {f"{who}_test_{m}" for who in ("target", "popularity") for m in guard.FIGURES}


def test_require_target_lift_is_an_experiment_key_that_leaves_run_ids_alone():
    from raysteal.experiment.config import parse_experiment
    from raysteal.experiment.run import expand_runs

    spec = {
        "experiment": "g",
        "seeds": 2,
        "datasets": [{"name": "synthetic"}],
        "targets": [{"model": "bpr"}],
        "attacks": [{"attack": "popularity"}],
        "k": 10,
    }
    plain = parse_experiment(spec)
    strict = parse_experiment({**spec, "require_target_lift": 1.5, "target_lift_warning": 1.1})
    assert plain.require_target_lift is None and plain.target_lift_warning == 1.2
    assert strict.require_target_lift == 1.5 and strict.target_lift_warning == 1.1
    assert [r.id for r in expand_runs(plain)] == [r.id for r in expand_runs(strict)]
    with pytest.raises(ConfigError, match="require_target_lift"):
        parse_experiment({**spec, "require_target_lift": 0})


def test_the_cli_option_hands_the_runner_the_required_lift(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    import raysteal.distributed.experiment_runner as runner_module
    from raysteal.cli import app

    handed = []

    class _NoRows:
        def load(self):
            return pd.DataFrame()

    monkeypatch.setattr(runner_module, "run_experiment", lambda config, out_dir, **_: handed.append(config) or _NoRows())
    spec = {
        "experiment": "g",
        "seeds": 1,
        "datasets": [{"name": "synthetic", "options": {"num_users": 200, "num_items": 100}}],
        "targets": [{"model": "bpr"}],
        "attacks": [{"attack": "popularity"}],
        "k": 10,
        "require_target_lift": 1.1,
    }
    file = tmp_path / "g.yaml"
    file.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "b"), "--require-target-lift", "2.5"])
    assert result.exit_code == 0, result.output
    assert [c.require_target_lift for c in handed] == [1.1, 2.5]
    result = CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "c"), "--require-target-lift", "0"])
    assert result.exit_code != 0


def test_agr_lift_normalises_agreement_by_the_popularity_floor():
    from raysteal.results.summary import summary_markdown, with_derived_metrics

    rows = pd.DataFrame(
        [
            {
                "experiment": "e",
                "dataset": "d",
                "target": "bpr",
                "attack": "ptd",
                "seed": 0,
                "k": 10,
                "agr@k": 0.6,
                "popularity_agr@k": 0.2,
            },
            {
                "experiment": "e",
                "dataset": "d",
                "target": "bpr",
                "attack": "ptd",
                "seed": 1,
                "k": 10,
                "agr@k": 0.2,
                "popularity_agr@k": 0.2,
            },
            {
                "experiment": "e",
                "dataset": "d",
                "target": "lmf",
                "attack": "ptd",
                "seed": 0,
                "k": 10,
                "agr@k": 0.5,
                "popularity_agr@k": 1.0,
            },
        ]
    )
    out = with_derived_metrics(rows)
    assert out["agr@k/lift"].tolist()[:2] == pytest.approx([0.5, 0.0])
    assert math.isnan(out["agr@k/lift"].iloc[2])  # a floor of 1 leaves nothing to normalise by
    table = summary_markdown(rows)
    assert "agr@k/lift" in table.splitlines()[0] and "0.2500 ± 0.3536" in table
    assert "agr@k/lift" not in with_derived_metrics(rows.drop(columns="popularity_agr@k")).columns


def test_held_out_ranks_are_the_evaluation_protocols_ranks():
    """One protocol: the clone's / the target's row accuracy ranks the test item exactly as
    ``evaluate`` does (training and validation items excluded, ties against the test item)."""
    loo = leave_one_out(_log(seed=3))
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(loo.train.num_users, loo.train.num_items)).astype(np.float32)  # many ties
    model = _Scores(scores)
    users = loo.evaluable_users
    expected = evaluate(model, loo, "test", users=users)["per_user"]["rank_full"]
    got = held_out_ranks(model, users, loo.test[users], seen_csr(loo, users, "test"))
    assert (got == expected).all()
    indptr, items = csr_select_train(loo, users)
    got = held_out_ranks(model, users, loo.test[users], append_items(indptr, items, loo.valid[users]))
    assert (got == expected).all()
    assert (held_out_ranks(model, users[:3], np.array([-1, loo.test[users[1]], -1]), seen_csr(loo, users[:3], "test"))[[0, 2]] == -1).all()
    recall, ndcg = guard.ranked_accuracy(np.array([0, 3, 20, -1]), k=10)
    assert recall == pytest.approx(2 / 3) and ndcg == pytest.approx((1.0 + 1 / np.log2(5)) / 3)


def test_append_items_adds_one_item_per_row_and_skips_rows_without_one():
    indptr, items = append_items(np.array([0, 2, 2, 3]), np.array([5, 6, 7]), np.array([9, -1, 8]))
    assert indptr.tolist() == [0, 3, 3, 5] and items.tolist() == [5, 6, 9, 7, 8]


def csr_select_train(loo, users):
    from raysteal.metrics import csr_select

    return csr_select(loo.train.indptr, loo.train.items, users)


def test_a_run_row_carries_the_floor_and_one_protocol_for_target_and_clone():
    """``execute_run`` with a prepared target (as ``prepare_target`` makes it): the row's
    ``target_recall@k`` / ``target_ndcg@k`` are the evaluation protocol's on the known users, the
    popularity floor is the popularity recommender's agreement on the queried users, and the
    popularity attack's clone sits near that floor."""
    from raysteal.distributed.deploy import with_guard
    from raysteal.experiment.config import parse_experiment
    from raysteal.experiment.context import RunData
    from raysteal.experiment.execute import build_knowledge, execute_run
    from raysteal.experiment.run import expand_runs
    from raysteal.metrics import agreement_at_k
    from raysteal.oracle import RankingEngine, TargetSpec, in_process_oracle
    from raysteal.training import fit, make_train_config, seeded_model
    from raysteal.training.guard import target_columns

    halves = split_target_auxiliary(load_dataset("synthetic", num_users=300, num_items=150, max_len=30, seed=4), seed=0)
    loo = leave_one_out(halves.target)
    target = seeded_model({"model": "bpr", "embedding_dim": 8}, loo.train.num_users, loo.train.num_items, seed=0)
    fit(target, loo, make_train_config(epochs=2, batch_size=256), seed=0, progress=False, device="cpu")
    truth = RankingEngine(target, loo.train.indptr, loo.train.items).topk(np.arange(loo.train.num_users), 10)
    metrics = with_guard(target, loo, {}, seed=0, device="cpu")
    data = RunData("synthetic", "bpr", loo.train, loo.test, halves.auxiliary, truth, target_metrics=metrics)
    spec = parse_experiment(
        {
            "experiment": "p",
            "seeds": 1,
            "datasets": [{"name": "synthetic"}],
            "targets": [{"model": "bpr"}],
            "attacks": [{"attack": "popularity"}],
            "split": {"attacker_fraction": 0.5},
            "k": 10,
        }
    )
    run = expand_runs(spec)[0]
    row = execute_run(run, data, in_process_oracle(TargetSpec.from_training_log(target, loo.train)).register_attacker("a"))
    knowledge = build_knowledge(run, data)
    known = knowledge.target_user_ids
    ranks = evaluate(target, loo, "test", users=known[loo.test[known] >= 0])["per_user"]["rank_full"]
    assert row["target_recall@k"] == pytest.approx(float((ranks < 10).mean()))
    assert row["target_ndcg@k"] == pytest.approx(float(np.where(ranks < 10, 1 / np.log2(ranks + 2.0), 0).mean()))
    queried = knowledge.query_users
    floor = agreement_at_k(truth[known][queried], guard.popularity_lists(loo.train, known, 10)[queried])
    assert row["popularity_agr@k"] == pytest.approx(float(np.mean(floor)))
    assert 0.0 <= row["clone_recall@k"] <= 1.0 and 0.0 <= row["clone_ndcg@k"] <= row["clone_recall@k"]
    cols = target_columns(data.target_metrics)
    assert cols["target_test_ndcg@10_full"] == metrics["guard"]["target_ndcg@10_full"]
    assert cols["target_lift"] == metrics["guard"]["target_lift"]


@pytest.mark.ray
def test_run_prints_the_guard_carries_it_in_rows_and_refuses_a_weak_target(ray_session, tmp_path, capsys):
    """``raysteal run``: each prepared target is printed beside popularity with its lift, its rows
    carry ``target_lift`` and the floor (``agr@k/lift`` in the table); with a required lift it
    cannot reach, no run of it is attempted and the error says so in one line per run."""
    from raysteal.distributed.experiment_runner import run_experiment
    from raysteal.errors import RaystealError
    from raysteal.experiment.config import parse_experiment
    from raysteal.results.summary import summary_markdown

    spec = {
        "experiment": "guarded",
        "seeds": 1,
        "datasets": [{"name": "synthetic", "options": {"num_users": 300, "num_items": 150, "max_len": 40, "seed": 1}}],
        "targets": [{"model": "bpr", "train": {"epochs": 2, "batch_size": 512}}],
        "attacks": [{"attack": "popularity"}],
        "split": {"attacker_fraction": 0.3},
        "k": 10,
    }
    store = run_experiment(parse_experiment(spec), tmp_path / "out", cache_dir=str(tmp_path / "cache"), progress=True)
    err = capsys.readouterr().err
    assert "target bpr on synthetic on " in err and "lift " in err and "popularity:" in err
    frame = store.load()
    (row,) = frame.to_dict("records")
    assert row["target_lift"] == pytest.approx(row["target_test_ndcg@10_full"] / row["popularity_test_ndcg@10_full"])
    assert 0.0 <= row["popularity_agr@k"] <= 1.0 and 0.0 <= row["target_recall@k"] <= 1.0
    assert "agr@k/lift" in summary_markdown(frame).splitlines()[0]

    strict = parse_experiment({**spec, "require_target_lift": 1000.0})
    with pytest.raises(RaystealError, match="not attacked") as err:
        run_experiment(strict, tmp_path / "strict", cache_dir=str(tmp_path / "cache"), progress=False)
    (line,) = [text for text in str(err.value).splitlines() if "not attacked" in text]
    assert "bpr on synthetic" in line and "1000x" in line
    assert not (tmp_path / "strict" / "runs").exists() or not any((tmp_path / "strict" / "runs").iterdir())
