"""The attack x defense matrix (issue 28 item 4): every row names its defense in ``defense``
(serving chain and what is trained into the target), old rows read the same, and the
``matrix`` / ``pareto`` report kinds render from synthetic rows (no training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raysteal.errors import ConfigError
from raysteal.report import render_report
from raysteal.report.matrix import defense_order, pareto_points
from raysteal.results import ResultStore
from raysteal.results.summary import defense_name, setting_number, summarize, with_derived_metrics

BASE = {"experiment": "demo", "datasets": [{"name": "synthetic"}], "targets": [{"model": "bpr"}], "attacks": [{"attack": "popularity"}]}


def test_defense_names_are_readable_sorted_and_read_back_as_numbers():
    assert defense_name([]) == "none"
    assert defense_name([{"type": "popular_mixing", "n": 10}]) == "popular_mixing(n=10)"
    assert defense_name([{"type": "rate_limit", "rate": 500.0, "burst": 16}]) == "rate_limit(burst=16,rate=500)"
    chain = [{"type": "gro", "strength": 0.1}, {"type": "truncate", "max_items": 20}, {"type": "shuffle", "depth": None}]
    assert defense_name(chain) == "gro(strength=0.1)+truncate(max_items=20)+shuffle()"
    # what Zhu's Fig. 7 curve and its paper keys read: the items mixed in, from the name as from the JSON
    assert setting_number("popular_mixing(n=15)") == setting_number(json.dumps([{"type": "popular_mixing", "n": 15}])) == 15
    assert setting_number("none") == setting_number("[]") == 0
    assert setting_number("gro(strength=0.1)+popular_mixing(n=5)") == 5
    with pytest.raises(ValueError):
        setting_number("bpr")  # not a defense, not a number


def test_every_run_names_its_serving_and_trained_in_defenses_without_changing_its_id():
    from raysteal.experiment.config import parse_experiment
    from raysteal.experiment.execute import defense_columns
    from raysteal.experiment.run import expand_runs

    config = parse_experiment(
        {
            **BASE,
            "seeds": 1,
            "targets": [{"model": "bpr"}, {"model": "bpr", "gro": {"strength": 0.1}}, {"model": "bpr", "gro": {"strength": 0.5, "k": 20}}],
            "defenses": [[], [{"type": "popular_mixing", "n": 10}], [{"type": "rate_limit", "rate": 100, "burst": 1000}]],
        }
    )
    runs = expand_runs(config)
    names = {(json.dumps(r.spec["target"].get("gro")), defense_columns(r)["defense"]) for r in runs}
    assert {name for _, name in names} == {
        "none",
        "popular_mixing(n=10)",
        "rate_limit(burst=1000,rate=100)",
        "gro(strength=0.1)",
        "gro(strength=0.1)+popular_mixing(n=10)",
        "gro(strength=0.1)+rate_limit(burst=1000,rate=100)",
        "gro(k=20,strength=0.5)",  # a setting other than the default is named
        "gro(k=20,strength=0.5)+popular_mixing(n=10)",
        "gro(k=20,strength=0.5)+rate_limit(burst=1000,rate=100)",
    }
    columns = defense_columns(runs[-1])
    assert columns["target_defense"] == "gro(k=20,strength=0.5)"
    assert columns["defense_chain"] == [{"type": "rate_limit", "rate": 100, "burst": 1000}]
    # the row's columns are not the run's spec: the id hashes the spec alone
    assert all("defense" not in r.spec for r in runs) and len({r.id for r in runs}) == len(runs)


def test_a_watermark_is_named_by_its_copies_never_its_key():
    from raysteal.experiment.config import parse_experiment
    from raysteal.experiment.execute import defense_columns
    from raysteal.experiment.run import expand_runs

    target = {"model": "sasrec", "params": {"max_len": 20}, "watermark": {"key": 123456789, "length": 5, "copies": 7}}
    config = parse_experiment({**BASE, "seeds": 1, "targets": [target], "k": 10, "split": {"aux_fraction": 0.0}})
    name = defense_columns(expand_runs(config)[0])["defense"]
    assert name == "watermark(copies=7,length=5)" and "123456789" not in name


def test_targets_differing_only_in_a_trained_in_defense_are_other_cells_but_twins_are_refused():
    from raysteal.experiment.config import parse_experiment

    parse_experiment({**BASE, "targets": [{"model": "bpr"}, {"model": "bpr", "gro": {"strength": 0.1}}]})
    with pytest.raises(ConfigError, match="targets.1 and targets.0 are both 'bpr'"):
        parse_experiment({**BASE, "targets": [{"model": "bpr", "gro": {"strength": 0.1}}, {"model": "bpr", "gro": {"strength": 0.1}}]})


def _row(attack: str, defense: str, agr: float, ndcg: float, *, target_defense: str = "none", seed: int = 0) -> dict:
    return {
        "experiment": "demo",
        "dataset": "synthetic",
        "preprocess": "none",
        "target": "bpr",
        "target_params": "{}",
        "attack": attack,
        "clone": "bpr",
        "seed": seed,
        "k": 10,
        "defense": defense,
        "target_defense": target_defense,
        "budget": -1,
        "attacker_fraction": 0.1,
        "agr@k": agr,
        "agr@10": agr,
        "popularity_agr@k": 0.2,
        "target_ndcg@k/defended": ndcg,
        "target_test_ndcg@10_full": 0.1 if target_defense == "none" else 0.09,
        "queries": 100,
    }


def _matrix_rows() -> list[dict]:
    rows = []
    for seed, jitter in ((0, 0.0), (1, 0.02)):
        for attack, strength in (("ptq", 0.6), ("ptaq", 0.7)):
            rows += [
                _row(attack, "none", strength + jitter, 0.30, seed=seed),
                _row(attack, "popular_mixing(n=10)", strength - 0.2 + jitter, 0.24, seed=seed),
                _row(attack, "shuffle(depth=20)", strength - 0.1 + jitter, 0.29, seed=seed),
                _row(attack, "gro(strength=0.1)", strength - 0.15 + jitter, 0.285, target_defense="gro(strength=0.1)", seed=seed),
            ]
        rows.append(_row("popularity", "none", 0.2, 0.30, seed=seed))
        rows.append(_row("popularity", "gro(strength=0.1)", 0.18, 0.285, target_defense="gro(strength=0.1)", seed=seed))
    rows = [r for r in rows if not (r["attack"] == "ptaq" and r["defense"] == "shuffle(depth=20)" and r["seed"] == 1)]
    rows.append(_row("ptq", "rate_limit(burst=10,rate=1)", 0.0, 0.30))
    return [r for r in rows if not (r["attack"] == "ptq" and r["defense"].startswith("rate_limit"))]  # refused: no row


def _render(tmp_path, rows: list[dict], report: list) -> str:
    store = ResultStore(tmp_path)
    for i, row in enumerate(rows):
        store.write_row(f"r{i}", row)
    (tmp_path / "experiments").mkdir(exist_ok=True)
    (tmp_path / "experiments" / "demo.json").write_text(json.dumps({"experiment": "demo", "report": report}))
    return render_report(tmp_path).read_text()


def test_the_matrix_and_pareto_figures_render_from_rows(tmp_path):
    text = _render(
        tmp_path,
        _matrix_rows(),
        [
            {"kind": "matrix", "metrics": ["agr@10", "agr@k/lift"], "title": "Matrix"},
            {"kind": "pareto", "metric": "agr@10", "title": "Pareto"},
            {"kind": "pareto", "metric": "agr@10", "cost": "target_test_ndcg@10_full"},
        ],
    )
    out = tmp_path / "report"
    for png in ("demo-0-matrix.png", "demo-1-pareto.png", "demo-2-pareto.png"):
        assert (out / png).stat().st_size > 5000, png
    # the matrix's numbers: attacks down, defenses across with none first, mean ± std over seeds
    header = next(line for line in text.splitlines() if line.startswith("| attack | none"))
    assert header == "| attack | none | gro(strength=0.1) | popular_mixing(n=10) | shuffle(depth=20) |"
    assert "| ptq | 0.6100 ± 0.0141 | 0.4600 ± 0.0141 | 0.4100 ± 0.0141 | 0.5100 ± 0.0141 |" in text
    assert "| ptaq | 0.7100 ± 0.0141 | 0.5600 ± 0.0141 | 0.5100 ± 0.0141 | 0.6000 |" in text  # one seed: no spread
    # the lift over the floor: (0.61 - 0.2) / 0.8
    assert "| ptq | 0.5125 ± 0.0177 |" in text
    # the popularity floor is the matrix's last row
    assert text.index("| popularity |") > text.index("| ptq |")


def test_pareto_cost_is_the_relative_drop_and_the_front_keeps_the_undominated_defenses():
    frame = with_derived_metrics(pd.DataFrame(_matrix_rows()))
    points = pareto_points(frame, {"metric": "agr@10"}).set_index(["attack", "defense"])
    assert points.loc[("ptq", "none"), "cost"] == pytest.approx(0.0)
    assert points.loc[("ptq", "popular_mixing(n=10)"), "cost"] == pytest.approx(0.2)  # 1 - 0.24 / 0.30
    assert points.loc[("ptq", "gro(strength=0.1)"), "cost"] == pytest.approx(0.05)
    # ptq: none (0, 0.61) > shuffle (0.033, 0.51) > gro (0.05, 0.46) > mixing (0.2, 0.41): each cheaper one lets it copy more
    assert points.xs("ptq")["front"].all()
    assert ("popularity", "none") not in points.index  # the floor is a line, not a point
    # a cost measured on the undefended target places only what is trained into it
    plain = pareto_points(frame, {"metric": "agr@10", "cost": "target_test_ndcg@10_full"}).set_index(["attack", "defense"])
    assert plain.loc[("ptq", "gro(strength=0.1)"), "placed"] and plain.loc[("ptq", "gro(strength=0.1)"), "cost"] == pytest.approx(0.1)
    assert not plain.loc[("ptq", "popular_mixing(n=10)"), "placed"]
    dominated = pareto_points(
        pd.DataFrame([_row("ptq", "none", 0.5, 0.3), _row("ptq", "shuffle(depth=20)", 0.55, 0.25)]), {"metric": "agr@10"}
    ).set_index("defense")
    assert dominated.loc["none", "front"] and not dominated.loc["shuffle(depth=20)", "front"]  # dearer and no protection


def test_rows_written_before_defense_names_read_as_the_names():
    old = {**_row("ptq", json.dumps([{"n": 10, "type": "popular_mixing"}]), 0.4, 0.2), "target_defense": np.nan}
    new = _row("ptq", "popular_mixing(n=10)", 0.6, 0.2, seed=1)
    frame = with_derived_metrics(pd.DataFrame([old, new, {**_row("ptq", "[]", 0.7, 0.3), "target_defense": np.nan}]))
    assert frame["defense"].tolist() == ["popular_mixing(n=10)", "popular_mixing(n=10)", "none"]
    assert frame["target_defense"].tolist() == ["none"] * 3
    table = summarize(pd.DataFrame([old, new]), ["agr@k"])
    assert len(table) == 1 and table["seeds"].iloc[0] == 2  # one cell: the old row and the new are seeds of it


def test_defenses_are_ordered_none_first_then_single_then_combined():
    names = ["shuffle(depth=5)", "gro(strength=0.1)+shuffle(depth=5)", "none", "gro(strength=0.1)"]
    assert defense_order(names) == ["none", "gro(strength=0.1)", "shuffle(depth=5)", "gro(strength=0.1)+shuffle(depth=5)"]


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"kind": "pareto", "cost": ""}, r"report\.0: .*'cost' must name a column"),
        ({"kind": "matrix", "cost": "target_ndcg@k/defended"}, r"report\.0: .*'cost' is the x axis of a pareto figure, not of a matrix"),
        ({"kind": "matrix", "metrics": []}, r"report\.0\.metrics"),
        ({"kind": "paretto"}, r"report\.0\.kind"),
    ],
)
def test_a_bad_matrix_or_pareto_entry_is_a_one_line_config_error(entry, problem):
    from raysteal.experiment.config import parse_experiment

    with pytest.raises(ConfigError, match=problem) as err:
        parse_experiment({**BASE, "report": [entry]})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"kind": "pareto", "cost": "nope"}, r"report\.0\.cost: column 'nope' is not in the results"),
        ({"kind": "pareto", "metric": "agr@50"}, r"report\.0\.metric: column 'agr@50' is not in the results"),
        ({"kind": "matrix", "metrics": ["agr@10", "nope"]}, r"report\.0\.metrics\.1: column 'nope' is not in the results"),
        ({"kind": "matrix", "facet": "nope"}, r"report\.0\.facet: column 'nope' is not in the results"),
    ],
)
def test_a_matrix_or_pareto_entry_naming_a_missing_column_is_a_one_line_config_error(tmp_path, entry, problem):
    with pytest.raises(ConfigError, match=problem) as err:
        _render(tmp_path, _matrix_rows()[:3], [entry])
    assert "\n" not in str(err.value)


def test_a_truncating_defense_costs_the_target_its_missing_tail():
    """Truncating the lists below K scores them as lists of K with an empty tail (it used to be an
    error that stopped the whole collaborative experiment)."""
    from raysteal.oracle import build_defenses
    from raysteal.oracle.cost import defense_cost
    from raysteal.oracle.engine import RankingEngine
    from tests.oracle_fixtures import bpr_target, random_log

    log = random_log(num_users=50, num_items=200, per_user=10, seed=3)
    engine = RankingEngine(bpr_target(log, seed=3), log.indptr, log.items)
    users = np.arange(50)
    top = engine.topk(users, 20)
    relevant = np.stack([top[:, 2], top[:, 15]], axis=1)  # one item kept by the truncation, one cut
    cost = defense_cost(engine, build_defenses([{"type": "truncate", "max_items": 10}]), users, relevant, k=20)
    assert cost["recall@20"] == 1.0 and cost["recall@20/defended"] == pytest.approx(0.5)
    assert 0.0 < cost["ndcg@20/defended"] < cost["ndcg@20"]
