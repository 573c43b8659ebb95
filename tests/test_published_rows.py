"""Rows taken back from a published results file (``--from docs/results/...``): a checkout that holds
only the committed ``results.parquet`` resumes an experiment without redoing its finished runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raysteal.errors import ConfigError, DataFileError
from tests.test_reproduce import TABLE, _fake_rows


def _config(tmp_path: Path):
    from raysteal.experiment.config import load_experiment

    path = tmp_path / "tiny-table.yaml"
    path.write_text(yaml.safe_dump(TABLE, sort_keys=False))
    return path, load_experiment(path)


def _published(tmp_path: Path, rows: list[dict]) -> Path:
    """A results directory with ``rows``, exported, and its ``results.parquet`` alone in a new folder."""
    from raysteal.results.store import ResultStore

    store = ResultStore(tmp_path / "ran")
    for row in rows:
        store.write_row(row["run_id"], row)
    published = tmp_path / "docs" / "tiny-table"
    published.mkdir(parents=True)
    shutil.copy(store.export(), published / "results.parquet")
    return published


def test_published_rows_come_back_as_the_rows_that_were_written(tmp_path):
    from raysteal.results.reproduction import import_rows
    from raysteal.results.store import ResultStore

    _, config = _config(tmp_path)
    rows = _fake_rows(config, seeds=2)
    rows[0]["note"] = "only this run has it"  # a column the export gives every row, empty in the others
    published = _published(tmp_path, rows[:4])

    copied = import_rows(config, tmp_path / "resumed", [published])

    assert copied == {str(published): 4}
    assert (tmp_path / "resumed" / "experiments" / "tiny-table.json").is_file()  # the report's tables, with no run here
    store = ResultStore(tmp_path / "resumed")
    assert store.finished() == {row["run_id"] for row in rows[:4]}
    back = store.load().set_index("run_id").sort_index()
    original = ResultStore(tmp_path / "ran").load().set_index("run_id").sort_index()
    pd.testing.assert_frame_equal(back[original.columns], original, check_dtype=False)
    # the export's empty columns do not come back as values
    assert back["note"].notna().sum() == 1
    # a second import copies nothing: the rows are there
    assert import_rows(config, tmp_path / "resumed", [published]) == {}


def test_raysteal_run_from_a_published_file_skips_its_runs(ray_session, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from raysteal.cli import app
    from raysteal.results.store import ResultStore

    monkeypatch.chdir(tmp_path)
    path, config = _config(tmp_path)
    rows = _fake_rows(config, seeds=2)  # every run of the file (2 seeds x 3 attacks)
    published = _published(tmp_path, rows)

    result = CliRunner().invoke(app, ["run", str(path), "--out", "resumed", "--quiet", "--from", str(published)])

    assert result.exit_code == 0, result.output
    assert f"tiny-table: {len(rows)} finished run(s) taken from {published}" in result.output
    assert ResultStore(tmp_path / "resumed").finished() == {row["run_id"] for row in rows}
    assert not (tmp_path / "resumed" / "partial").exists()  # nothing ran


def test_from_a_missing_directory_is_one_line(tmp_path):
    from raysteal.results.reproduction import check_sources

    with pytest.raises(ConfigError, match=r"^--from .*nowhere: not a directory"):
        check_sources([tmp_path / "nowhere"])


def test_a_results_file_without_run_ids_is_refused(tmp_path):
    from raysteal.results.reproduction import import_rows

    _, config = _config(tmp_path)
    source = tmp_path / "other"
    source.mkdir()
    pd.DataFrame({"agr@10": [0.5]}).to_parquet(source / "results.parquet")
    with pytest.raises(DataFileError, match="has no run_id column"):
        import_rows(config, tmp_path / "resumed", [source])
    assert not (tmp_path / "resumed" / "runs").exists()  # nothing written


def test_rows_of_two_trainings_of_one_target_are_named(tmp_path):
    # rows taken --from were scored against one training of the target, rows run here against a
    # retrained one (other code, other device): the comparison is named, not silently mixed
    from raysteal.results.reproduction import import_rows, retrained_targets
    from raysteal.results.store import ResultStore

    _, config = _config(tmp_path)
    rows = _fake_rows(config, seeds=2)
    for row in rows:
        row["target_test_ndcg@10_full"] = 0.1495
    published = _published(tmp_path, rows[:3])
    out = tmp_path / "resumed"
    import_rows(config, out, [published])
    store = ResultStore(out)
    assert retrained_targets(config, out) == []  # nothing run here yet
    for row in rows[3:]:
        store.write_row(row["run_id"], {**row, "target_test_ndcg@10_full": 0.1495})
    assert retrained_targets(config, out) == []  # the same training
    store.write_row(rows[3]["run_id"], {**rows[3], "target_test_ndcg@10_full": 0.1531})
    (line,) = retrained_targets(config, out)
    assert line.startswith("tiny-table: bpr on synthetic: rows taken --from") and "0.1495" in line and "0.1531" in line


def test_only_the_sources_that_supplied_rows_bring_their_sittings_and_each_comes_once(tmp_path):
    import json

    from raysteal.results.reproduction import carry_sittings, import_rows, imported_sittings, record_sitting, sittings

    _, config = _config(tmp_path)
    rows = _fake_rows(config)
    published = _published(tmp_path, rows)
    unused = tmp_path / "elsewhere" / "tiny-table"  # the same rows, but the first source supplies them all
    unused.mkdir(parents=True)
    shutil.copy(published / "results.parquet", unused / "results.parquet")
    theirs = {"started_utc": "2026-12-01T10:00:00+00:00", "wall_s": 60.0, "status": "done", "runs_before": 0, "runs_after": 6}
    (published / "reproduce.json").write_text(json.dumps({"sittings": [theirs]}))
    (unused / "reproduce.json").write_text(json.dumps({"sittings": [{**theirs, "started_utc": "2026-12-02T10:00:00+00:00"}]}))

    out = tmp_path / "resumed"
    ours = {**theirs, "started_utc": "2026-12-03T10:00:00+00:00", "wall_s": 5.0}
    record_sitting(out, Path("tiny-table.yaml"), config.experiment, ours)
    assert carry_sittings(out, [published, unused]) == 0  # nothing imported yet: nobody's sittings
    import_rows(config, out, [published, unused])
    assert carry_sittings(out, [published, unused]) == 1
    assert carry_sittings(out, [published, unused]) == 0  # once, however often it is asked
    (carried,) = imported_sittings(out)
    assert carried == {**theirs, "from": str(published.resolve())}
    assert sittings(out) == [ours]  # the sittings here stay apart

    # published back and taken in again by a fresh directory: each sitting still once, with its first source
    shutil.copy(out / "reproduce.json", published / "reproduce.json")
    again = tmp_path / "again"
    import_rows(config, again, [published])
    assert carry_sittings(again, [published]) == 2
    assert sorted(s["started_utc"] for s in imported_sittings(again)) == [theirs["started_utc"], ours["started_utc"]]
    assert {s["from"] for s in imported_sittings(again)} == {str(published.resolve())}


def test_a_damaged_sittings_record_is_one_clear_error_and_changes_nothing(tmp_path):
    import json

    from raysteal.results.reproduction import carry_sittings, import_rows

    _, config = _config(tmp_path)
    published = _published(tmp_path, _fake_rows(config))
    (published / "reproduce.json").write_text(json.dumps({"sittings": [{"started_utc": "x", "wall_s": "an hour"}]}))
    out = tmp_path / "resumed"
    import_rows(config, out, [published])
    with pytest.raises(DataFileError, match=r"reproduce.json: not the sittings record raysteal reproduce writes"):
        carry_sittings(out, [published])
    assert not (out / "reproduce.json").exists()


def _two_files_published(tmp_path: Path):
    """The table's and the figure's configs, a row for every run of each, and all those rows published
    in one ``results.parquet`` (a directory that gathered both files)."""
    from raysteal.experiment.config import load_experiment
    from tests.test_reproduce import FIGURE

    _, table = _config(tmp_path)
    figure_path = tmp_path / "tiny-figure.yaml"
    figure_path.write_text(yaml.safe_dump(FIGURE, sort_keys=False))
    figure = load_experiment(figure_path)
    table_rows, figure_rows = _fake_rows(table, seeds=2), _fake_rows(figure)
    return table, figure, table_rows, figure_rows, _published(tmp_path, table_rows + figure_rows)


def _report(*args: str):
    from typer.testing import CliRunner

    from raysteal.cli import app

    return CliRunner().invoke(app, ["report", *args])


def test_report_from_takes_back_the_published_rows_of_every_experiment_the_directory_gathers(tmp_path):
    # one results directory holding the runs of two experiment files: `raysteal run --from` takes
    # back only its own file's rows, so the report (and results.parquet) would lose the other's
    from raysteal.results.store import ResultStore

    table, figure, table_rows, figure_rows, published = _two_files_published(tmp_path)
    here = ResultStore(tmp_path / "here")  # this checkout ran one new run of each file, and kept both specifications
    for config, row in ((table, table_rows[0]), (figure, figure_rows[0])):
        here.write_row(row["run_id"], {**row, "note": "run here"})
        here.save_experiment(config.experiment, config.model_dump(mode="json"))

    result = _report(str(here.root), "--from", str(published))

    assert result.exit_code == 0, result.output
    assert f"tiny-table: {len(table_rows) - 1} finished run(s) taken from {published}" in result.output
    assert f"tiny-figure: {len(figure_rows) - 1} finished run(s) taken from {published}" in result.output
    merged = pd.read_parquet(here.results_file).set_index("run_id")
    assert set(merged.index) == {row["run_id"] for row in table_rows + figure_rows}
    # the runs made here keep their own rows; the published copies of them are not taken
    assert merged["note"].dropna().to_dict() == {table_rows[0]["run_id"]: "run here", figure_rows[0]["run_id"]: "run here"}
    report = (here.root / "report" / "report.md").read_text()
    assert "## tiny-table" in report and "## tiny-figure" in report
    # a second report --from takes nothing more
    again = _report(str(here.root), "--from", str(published))
    assert again.exit_code == 0 and "taken from" not in again.output


def test_report_from_needs_the_directorys_experiment_specifications(tmp_path):
    from raysteal.results.reproduction import import_saved_experiments_rows

    _, config = _config(tmp_path)
    published = _published(tmp_path, _fake_rows(config))
    with pytest.raises(ConfigError, match=r"no experiment specification under experiments/"):
        import_saved_experiments_rows(tmp_path / "empty", [published])
    assert not (tmp_path / "empty").exists()  # nothing written
    damaged = tmp_path / "damaged"
    (damaged / "experiments").mkdir(parents=True)
    for text in ("{not json", "[1, 2]", '{"seeds": 2}'):  # not JSON, not a mapping, no experiment name
        (damaged / "experiments" / "x.json").write_text(text)
        with pytest.raises(DataFileError, match=r"x.json: not an experiment spec saved by raysteal run"):
            import_saved_experiments_rows(damaged, [published])
    assert not (damaged / "runs").exists()


def test_report_from_names_the_rows_it_has_no_specification_to_match(tmp_path):
    from raysteal.results.store import ResultStore

    table, _, table_rows, figure_rows, published = _two_files_published(tmp_path)
    here = ResultStore(tmp_path / "here")  # ran the table's file only
    here.write_row(table_rows[0]["run_id"], table_rows[0])
    here.save_experiment(table.experiment, table.model_dump(mode="json"))

    result = _report(str(here.root), "--from", str(published))

    assert result.exit_code == 0, result.output
    assert f"holds {len(figure_rows)} row(s) of experiment 'tiny-figure', which {here.root} keeps no specification of" in result.output
    assert set(pd.read_parquet(here.results_file)["experiment"]) == {"tiny-table"}
