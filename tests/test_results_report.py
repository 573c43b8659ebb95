"""Results store (atomic rows, resume ids), summaries and the report renderer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raysteal.errors import ConfigError
from raysteal.report import render_report
from raysteal.results import ResultStore, run_id
from raysteal.results.summary import summarize, summary_markdown


def _row(attack: str, seed: int, agr: float, k: int = 50, target: str = "bpr") -> dict:
    return {
        "experiment": "demo",
        "dataset": "synthetic",
        "target": target,
        "attack": attack,
        "clone": "bpr",
        "seed": seed,
        "k": k,
        "defense": [],
        "budget": -1,
        "attacker_fraction": 0.1,
        "auxiliary_size": 1.0,
        "item_overlap": 1.0,
        "agr@k": agr,
        "agr@k/heldout": agr - 0.1,
        "agr@10": agr + 0.05,
        "queries": 100,
        "hyperparameters": {"margin": 0.5},
    }


def test_run_ids_are_stable_and_distinct():
    run = {"attack": {"attack": "ptd"}, "seed": 0}
    assert run_id(run) == run_id(json.loads(json.dumps(run)))
    assert run_id(run) != run_id({**run, "seed": 1})


def test_rows_are_written_atomically_and_listed(tmp_path):
    store = ResultStore(tmp_path)
    store.write_row("abc", _row("ptd", 0, 0.5))
    assert store.finished() == {"abc"}
    assert not list((tmp_path / "runs").glob(".*tmp*"))  # no temp file left behind
    frame = store.load()
    assert frame.loc[0, "agr@k"] == 0.5
    assert json.loads(frame.loc[0, "hyperparameters"]) == {"margin": 0.5}
    # the directory is a Parquet dataset pandas reads directly
    assert len(pd.read_parquet(tmp_path / "runs")) == 1


def test_summary_mean_and_std_over_seeds_with_paper_value():
    frame = pd.DataFrame([_row("ptd", 0, 0.4), _row("ptd", 1, 0.6), _row("ptq", 0, 0.7)])
    for col in ("defense",):
        frame[col] = frame[col].map(json.dumps)
    table = summarize(frame, ["agr@k"], paper={"synthetic/bpr/ptd": 0.4987})
    ptd = table[table.attack == "ptd"].iloc[0]
    assert ptd["agr@k mean"] == pytest.approx(0.5)
    assert ptd["agr@k std"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert ptd["seeds"] == 2 and ptd["paper"] == 0.4987
    md = summary_markdown(frame, ["agr@k"], paper={"synthetic/bpr/ptd": 0.4987})
    assert "0.5000 ± 0.1414" in md and "0.4987" in md


def test_report_renders_tables_and_pngs(tmp_path):
    store = ResultStore(tmp_path)
    for i, (attack, k, target, agr) in enumerate(
        [("ptd", 10, "bpr", 0.3), ("ptd", 50, "bpr", 0.5), ("ptq", 10, "bpr", 0.35), ("ptq", 50, "lmf", 0.55)]
    ):
        row = _row(attack, 0, agr, k=k, target=target)
        row["clone"] = "lmf" if i % 2 else "bpr"
        store.write_row(f"r{i}", row)
    spec = {
        "experiment": "demo",
        "description": "d",
        "paper": {},
        "report": [
            {"kind": "table"},
            {"kind": "curve", "x": "k", "series": "attack", "title": "Fig. 2"},
            {"kind": "heatmap", "rows": "target", "cols": "clone", "title": "Fig. 6"},
        ],
    }
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "demo.json").write_text(json.dumps(spec))
    md = render_report(tmp_path)
    text = md.read_text()
    assert "## demo" in text and "Fig. 2" in text and "Fig. 6" in text
    pngs = sorted(p.name for p in md.parent.glob("*.png"))
    assert pngs == ["demo-1-curve.png", "demo-2-heatmap.png"]
    assert all((md.parent / p).stat().st_size > 1000 for p in pngs)


def test_the_report_rewrites_the_results_file_from_the_same_rows(tmp_path):
    # an interrupted raysteal run leaves results.parquet as an earlier invocation wrote it: the
    # report beside it must not show runs the file lacks
    store = ResultStore(tmp_path)
    store.write_row("r0", _row("ptd", 0, 0.3))
    store.export()
    store.write_row("r1", _row("ptq", 0, 0.4))  # finished after the last export
    render_report(tmp_path)
    assert sorted(pd.read_parquet(tmp_path / "results.parquet")["attack"]) == ["ptd", "ptq"]


def test_report_on_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no results"):
        render_report(tmp_path)
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(ConfigError, match="notes.txt: is a file, not a results directory"):
        render_report(tmp_path / "notes.txt")


def test_gain_over_the_teacher_is_derived_from_the_rows_own_accuracies():
    from raysteal.results.summary import with_derived_metrics

    rows = [
        {**_row("bahsd", s, 0.5), "defense": "[]", "student_ndcg@10": v, "teacher_ndcg@10": 0.2, "student_hr@10": 0.3, "teacher_hr@10": 0.0}
        for s, v in enumerate([0.21, 0.19])
    ]
    frame = with_derived_metrics(pd.DataFrame(rows))
    assert frame["gain_over_teacher/ndcg@10"].tolist() == pytest.approx([0.05, -0.05])
    assert frame["gain_over_teacher/hr@10"].isna().all()  # a teacher at 0: no ratio
    table = summarize(pd.DataFrame(rows), ["gain_over_teacher/ndcg@10"])
    assert table["gain_over_teacher/ndcg@10 mean"].iloc[0] == pytest.approx(0.0)
    plain = pd.DataFrame([_row("ptd", 0, 0.5)])
    assert with_derived_metrics(plain) is plain  # nothing to derive from: the frame is untouched


def test_targets_with_other_params_are_other_cells_not_seeds():
    rows = [
        {**_row("ptd", 0, 0.4), "target_params": json.dumps({"embedding_dim": 8})},
        {**_row("ptd", 0, 0.6), "target_params": json.dumps({"embedding_dim": 64})},
    ]
    frame = pd.DataFrame(rows)
    frame["defense"] = frame["defense"].map(json.dumps)
    table = summarize(frame, ["agr@k"])
    assert len(table) == 2 and (table["seeds"] == 1).all()
    assert "target_params" in summary_markdown(frame, ["agr@k"])
    # params that differ only between different target models add no column
    other = pd.DataFrame(
        [{**_row("ptd", 0, 0.4), "target_params": "{}"}, {**_row("ptd", 0, 0.5, target="lmf"), "target_params": '{"a": 1}'}]
    )
    other["defense"] = other["defense"].map(json.dumps)
    assert "target_params" not in summary_markdown(other, ["agr@k"])


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"kind": "curve", "x": "nope"}, r"report\.0\.x: column 'nope' is not in the results"),
        ({"kind": "heatmap", "rows": "nope"}, r"report\.0\.rows: column 'nope'"),
        ({"kind": "table", "metrics": ["agr@kk"]}, r"report\.0: none of the metrics \['agr@kk'\]"),
        ("table", r"report\.0 must be a mapping"),
    ],
)
def test_a_report_entry_naming_a_missing_column_is_a_clear_error(tmp_path, entry, problem):
    ResultStore(tmp_path).write_row("r0", _row("ptd", 0, 0.5))
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "demo.json").write_text(json.dumps({"experiment": "demo", "report": [entry]}))
    with pytest.raises(ConfigError, match=problem):
        render_report(tmp_path)


def test_a_damaged_saved_spec_is_named(tmp_path):
    from raysteal.errors import DataFileError

    ResultStore(tmp_path).write_row("r0", _row("ptd", 0, 0.5))
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "demo.json").write_text("{not json")
    with pytest.raises(DataFileError, match=r"demo\.json: not an experiment spec"):
        render_report(tmp_path)


def test_report_entries_are_validated_with_the_experiment_file():
    from raysteal.experiment.config import parse_experiment

    base = {"experiment": "demo", "datasets": [{"name": "synthetic"}], "targets": [{"model": "bpr"}], "attacks": [{"attack": "popularity"}]}
    for report, problem in [
        ([{"kind": "curve"}], "a curve needs 'x'"),
        ([{"kind": "tabel"}], r"report\.0\.kind"),
        (["table"], r"report\.0"),
        ([{"kind": "table", "colums": 1}], r"report\.0\.colums: unknown key"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            parse_experiment({**base, "report": report})


def test_a_report_spec_saved_by_raysteal_run_renders(tmp_path, monkeypatch):
    """The saved spec carries every report field (None where unset): a curve still labels its x axis."""
    from matplotlib.axes import Axes

    from raysteal.cli.run import save_experiment
    from raysteal.experiment.config import parse_experiment

    labels: list = []
    real_set_xlabel = Axes.set_xlabel
    monkeypatch.setattr(Axes, "set_xlabel", lambda ax, label, *a, **kw: (labels.append(label), real_set_xlabel(ax, label, *a, **kw))[1])

    config = parse_experiment(
        {
            "experiment": "demo",
            "datasets": [{"name": "synthetic"}],
            "targets": [{"model": "bpr"}],
            "attacks": [{"attack": "popularity"}],
            "report": [{"kind": "curve", "x": "k"}, {"kind": "table"}],
        }
    )
    save_experiment(config, tmp_path)
    store = ResultStore(tmp_path)
    for i, k in enumerate((10, 50)):
        store.write_row(f"r{i}", _row("ptd", 0, 0.3 + i / 10, k=k))
    md = render_report(tmp_path)
    assert (md.parent / "demo-0-curve.png").stat().st_size > 1000
    assert labels == ["k"]  # the saved spec's xlabel None falls back to the x column


def test_a_setting_one_run_left_unset_is_its_own_column_and_one_seed_shows_no_spread():
    rows = [
        {**_row("ptq", 0, 0.5), "hp/budget_sequences": np.nan, "queries": 302},
        {**_row("ptq", 0, 0.4), "hp/budget_sequences": 242.0, "queries": 242},
    ]
    frame = pd.DataFrame(rows)
    frame["defense"] = frame["defense"].map(json.dumps)
    lines = summary_markdown(frame, ["agr@k", "queries"]).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert "hp/budget_sequences" in header  # nan vs 242: two cells, told apart by the column
    assert header.count("queries") == 1  # asked for as a metric: not repeated at the end
    assert any("| 242 | 0.4000 | 242.0000 | 1 |" in line for line in lines)
    assert any("| – | 0.5000 | 302.0000 | 1 |" in line for line in lines)  # unset reads as a dash, not nan
    assert "±" not in "\n".join(lines[2:])  # one seed each: no spread to show, not "± 0.0000"


def test_a_curve_faceted_on_a_column_with_a_missing_value_renders(tmp_path):
    store = ResultStore(tmp_path)
    for i, (k, budget) in enumerate([(10, None), (50, None), (10, 242.0), (50, 242.0)]):
        store.write_row(f"r{i}", {**_row("ptq", 0, 0.3 + 0.1 * i, k=k), "hp/budget_sequences": budget})
    spec = {"experiment": "demo", "report": [{"kind": "curve", "x": "k", "facet": "hp/budget_sequences"}]}
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "demo.json").write_text(json.dumps(spec))
    assert (render_report(tmp_path).parent / "demo-0-curve.png").stat().st_size > 1000


def test_a_grid_over_head_fraction_gives_one_cell_per_value_and_old_rows_count_as_the_default():
    import pandas as pd

    from raysteal.results.summary import summarize

    rows = [
        {"experiment": "e", "dataset": "d", "target": "t", "attack": "dfme", "seed": s, "head_fraction": h, "agr@10/head": v}
        for s, (h, v) in enumerate([(0.2, 0.5), (0.2, 0.6), (0.5, 0.3)])
    ]
    cells = summarize(pd.DataFrame(rows), metrics=["agr@10/head"]).set_index("head_fraction")
    assert cells.loc[0.2, "seeds"] == 2 and cells.loc[0.5, "seeds"] == 1
    old = summarize(pd.DataFrame([{**rows[0], "head_fraction": float("nan")}, rows[1]]), metrics=["agr@10/head"])
    assert len(old) == 1 and "head_fraction" not in old.columns  # not an axis when it does not vary


def test_a_damaged_row_file_is_a_warning_when_rows_are_exported_and_loses_nothing(tmp_path):
    store = ResultStore(tmp_path)
    store.write_row("r0", _row("ptd", 0, 0.3))
    before = store.export().read_bytes()
    (store.runs_dir / "r1.parquet").write_bytes(b"not parquet")
    with pytest.warns(RuntimeWarning, match=r"results.parquet not written: .*r1.parquet"):
        assert store.export_or_warn() is None
    assert store.results_file.read_bytes() == before


def _markdown_rows(section: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``section``, keyed by its header."""
    lines = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return [dict(zip(lines[0], cells)) for cells in lines[1:]]


def _variant_row(experiment: str, variant: str, seed: int, tail: float, budget: int = -1) -> dict:
    return {**_row("bahsd", seed, tail), "experiment": experiment, "variant": variant, "budget": budget, "agr@10/tail": tail}


def test_a_table_relative_to_a_reference_compares_each_cell_with_the_reference_mean(tmp_path):
    """An ablation table: each cell's mean against the reference configuration's, found in another
    experiment's rows of the same directory and in the same setting (here: the same budget)."""
    store = ResultStore(tmp_path)
    rows = [
        _variant_row("main", "full", 0, 0.70),
        _variant_row("main", "full", 1, 0.74),  # reference mean 0.72
        _variant_row("main", "full", 0, 0.40, budget=10),  # another setting: its own reference
        _variant_row("ablations", "no-kl", 0, 0.684),
        _variant_row("ablations", "no-kl", 1, 0.684),  # 0.684 / 0.72 - 1 = -5.0%
        _variant_row("ablations", "no-kl", 0, 0.42, budget=10),  # 0.42 / 0.40 - 1 = +5.0%
        _variant_row("ablations", "no-probes", 0, 0.75, budget=99),  # no reference at that budget
        {**_row("popularity", 0, 0.03), "experiment": "ablations", "variant": "popularity", "agr@10/tail": 0.03},
    ]
    for i, row in enumerate(rows):
        store.write_row(f"r{i}", row)
    (tmp_path / "experiments").mkdir()
    table = {"kind": "table", "metrics": ["agr@10/tail", "agr@k"], "relative_to": {"variant": "full"}}
    for name in ("main", "ablations"):
        (tmp_path / "experiments" / f"{name}.json").write_text(json.dumps({"experiment": name, "report": [table]}))
    text = render_report(tmp_path).read_text()
    ablations = _markdown_rows(text.split("## ablations")[1].split("## main")[0])
    compared = {f"{r['variant']}@{r['budget']}": r["agr@10/tail vs full"] for r in ablations}
    assert compared == {
        "no-kl@-1": "-5.0%",
        "no-kl@10": "+5.0%",
        "no-probes@99": "–",
        "popularity@-1": "–",
    }  # no reference at 99; the floor is no variant
    assert [r["agr@10/tail vs full"] for r in _markdown_rows(text.split("## main")[1])] == ["reference", "reference"]


def test_relative_metrics_and_a_missing_reference_are_clear_errors(tmp_path):
    from raysteal.experiment.config import parse_experiment

    base = {"experiment": "demo", "datasets": [{"name": "synthetic"}], "targets": [{"model": "bpr"}], "attacks": [{"attack": "popularity"}]}
    for report, problem in [
        ([{"kind": "table", "relative_metrics": ["agr@k"]}], "'relative_metrics' needs 'relative_to'"),
        ([{"kind": "table", "relative_to": {"variant": "a", "attack": "b"}}], "names one reference"),
        ([{"kind": "curve", "x": "k", "relative_to": {"variant": "a"}}], "belong to a table"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            parse_experiment({**base, "report": report})
    store = ResultStore(tmp_path)
    store.write_row("r0", _variant_row("demo", "full", 0, 0.7))
    (tmp_path / "experiments").mkdir()
    for entry, problem in [
        ({"kind": "table", "relative_to": {"colour": "red"}}, r"report\.0\.relative_to: column 'colour' is not in the results"),
        ({"kind": "table", "relative_to": {"variant": "full"}, "relative_metrics": ["agr@99"]}, r"relative_metrics\.0: column 'agr@99'"),
    ]:
        (tmp_path / "experiments" / "demo.json").write_text(json.dumps({"experiment": "demo", "report": [entry]}))
        with pytest.raises(ConfigError, match=problem):
            render_report(tmp_path)


def test_a_reference_not_run_yet_leaves_the_report_renderable(tmp_path):
    ResultStore(tmp_path).write_row("r0", _variant_row("demo", "full", 0, 0.7))
    (tmp_path / "experiments").mkdir()
    entry = {"kind": "table", "metrics": ["agr@10/tail"], "relative_to": {"variant": "later"}}
    (tmp_path / "experiments" / "demo.json").write_text(json.dumps({"experiment": "demo", "report": [entry]}))
    rows = _markdown_rows(render_report(tmp_path).read_text())
    assert [r["agr@10/tail vs later (no rows)"] for r in rows] == ["–"]


def test_a_cell_that_spent_other_queries_than_its_reference_is_marked():
    """Equal budgets need not mean equal queries spent (a baseline can run out of prefixes to ask):
    the relative table then shows how many more or fewer each cell spent."""
    from raysteal.results.summary import relative_texts

    rows = [
        {**_variant_row("demo", "ranking", 0, 0.50), "queries": 22_000},
        {**_variant_row("demo", "bahsd", 0, 0.53), "queries": 31_000},
        {**_variant_row("demo", "kl", 0, 0.45), "queries": 22_100},
    ]
    frame = pd.DataFrame(rows)
    frame["defense"] = frame["defense"].map(json.dumps)
    texts = relative_texts(frame, frame, {"variant": "ranking"}, ["agr@10/tail"], ["agr@10/tail"])
    # cells in summarize's order: bahsd, kl, ranking
    assert texts["agr@10/tail vs ranking"] == ["+6.0%", "-10.0%", "reference"]
    assert texts["queries vs ranking"] == ["+40.9%", "=", "–"]
    equal = frame.assign(queries=22_000)
    assert "queries vs ranking" not in relative_texts(equal, equal, {"variant": "ranking"}, ["agr@10/tail"], ["agr@10/tail"])


def test_a_p_value_is_summarised_by_its_median_and_largest_not_a_mean():
    rows = [{**_row("dfme", seed, 0.5), "watermark_p_value": p} for seed, p in enumerate([1.1e-4, 0.21, 3e-41])]
    rows.append({**_row("ptq", 0, 0.4), "watermark_p_value": 2e-7})
    frame = pd.DataFrame(rows)
    frame["defense"] = frame["defense"].map(json.dumps)
    lines = summary_markdown(frame, ["agr@k", "watermark_p_value"]).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert "watermark_p_value (median)" in header
    dfme, ptq = (next(line for line in lines if f"| {name} |" in line) for name in ("dfme", "ptq"))
    assert "| 1.1e-04 (max 2.1e-01) |" in dfme  # three seeds: the median, and the weakest seed beside it
    assert "| 2.0e-07 |" in ptq  # one seed: the value alone
    assert "0.0000 ±" not in "\n".join(lines)
