"""The evidence page of a Tune search, read from Tune's per-trial result.json files."""

from __future__ import annotations

import json
import math

import pytest

from raysteal.errors import ConfigError
from raysteal.report.search import (
    common_epoch,
    curve_table,
    search_evidence,
    setting_effects,
    smoothed,
    trial_curves,
    trial_labels,
    trial_table,
)


def _trial(root, name, trial_id, values, config, torn=False):
    folder = root / "tune" / "sweep" / name
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"trial_id": trial_id, "training_iteration": e + 1, "agr@10/tail": v, "config": config}) for e, v in enumerate(values)
    ]
    text = "\n".join(lines) + "\n" + ('{"trial_id": "' if torn else "")
    (folder / "result.json").write_text(text)


@pytest.fixture
def sweep(tmp_path):
    _trial(tmp_path, "a", "a", [0.1, 0.5, 0.4], {"attack.probe_training": True, "attack.margin": 0.2}, torn=True)
    _trial(tmp_path, "b", "b", [0.2, 0.3], {"attack.probe_training": False, "attack.margin": 0.5})
    _trial(tmp_path, "c", "c", [0.3, 0.35, 0.6, 0.2], {"attack.probe_training": False, "attack.margin": 0.9})
    return tmp_path


def test_trials_are_ranked_by_their_peak_not_their_last_epoch(sweep):
    curves = trial_curves(sweep / "tune")
    assert len(curves) == 9  # the torn line is skipped
    table = trial_table(curves, "agr@10/tail")
    assert table["trial"].tolist() == ["c", "a", "b"]
    assert table.loc[0, ["peak", "peak_epoch", "epochs", "last"]].tolist() == [0.6, 3, 4, 0.2]
    assert table.loc[1, ["peak", "peak_epoch"]].tolist() == [0.5, 2]
    assert trial_table(curves, "agr@10/tail", mode="min")["trial"].tolist()[0] == "a"  # a's 0.1 is the lowest


def test_the_smoothed_peak_is_the_top_of_a_centred_moving_average(tmp_path):
    # one lucky epoch (0.9 at epoch 3) among steady values: the raw peak is the outlier, the smoothed one is not
    values = [0.1, 0.2, 0.9, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5]
    _trial(tmp_path, "t", "t", values, {"attack.baseline": "ranking"})
    curves = trial_curves(tmp_path / "tune")
    assert smoothed(curves["agr@10/tail"]).round(6).tolist()[:3] == [pytest.approx(0.4), pytest.approx(0.35), pytest.approx(0.34)]
    row = trial_table(curves, "agr@10/tail").iloc[0]
    assert (row["peak"], row["peak_epoch"]) == (0.9, 3)
    # epochs 6-10 average 0.5 where the window is whole or cut at the end
    assert row["smoothed_peak"] == pytest.approx(0.5) and row["smoothed_epoch"] == 8


def test_learning_curves_table_figure_and_labels(sweep, tmp_path):
    curves = trial_curves(sweep / "tune")
    table = curve_table(curves, "agr@10/tail", ["c", "b"], every=2)
    assert list(table.columns) == ["trial", "1", "2", "4"]
    assert table.loc[0, "1"] == pytest.approx((0.3 + 0.35 + 0.6) / 3)  # epoch 1: itself and the next two
    assert table.loc[1, "2"] == pytest.approx(0.25) and math.isnan(table.loc[1, "4"])  # b stopped at epoch 2
    with pytest.raises(ConfigError, match="every must be at least 1"):
        curve_table(curves, "agr@10/tail", ["c"], every=0)
    labels = trial_labels(trial_table(curves, "agr@10/tail"))
    assert labels["c"] == "c probe_training=False, margin=0.9"
    figure = tmp_path / "out" / "curves.png"
    figure.parent.mkdir()
    page = search_evidence(sweep / "tune", "agr@10/tail", figure=figure, curves_top=2)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![learning curves](curves.png)" in page and "## Learning curves of the 2 best trials" in page


def test_epochs_a_restored_trial_lost_from_result_json_come_from_its_epoch_log(tmp_path):
    # Tune restarted trial r's result.json at its restore: only epoch 3 is left there; its log has 1-3
    _trial(tmp_path, "r", "r", [], {"attack.margin": 0.4})
    (tmp_path / "tune" / "sweep" / "r" / "result.json").write_text(
        json.dumps({"trial_id": "r", "training_iteration": 1, "epoch": 3, "agr@10/tail": 0.6, "config": {"attack.margin": 0.4}}) + "\n"
    )
    logs = tmp_path / "tune_curves"
    logs.mkdir()
    (logs / "r.json").write_text(json.dumps({"1": {"agr@10/tail": 0.2}, "2": {"agr@10/tail": 0.4}, "3": {"agr@10/tail": 0.59}}))
    (logs / "torn.json").write_text("{")  # a log cut by a kill is skipped
    curves = trial_curves(tmp_path / "tune")
    assert curves["epoch"].tolist() == [1, 2, 3]
    assert curves["agr@10/tail"].tolist() == [0.2, 0.4, 0.6]  # result.json wins where both have the epoch
    assert curves["config/attack.margin"].tolist() == [0.4, 0.4, 0.4]
    row = trial_table(curves, "agr@10/tail").iloc[0]
    assert (row["peak"], row["peak_epoch"], row["smoothed_peak"]) == (0.6, 3, pytest.approx(0.4))  # every window holds all three


def test_a_finished_row_does_not_replace_the_probe_at_its_epoch(tmp_path):
    # a resumed trial's result.json holds only its finished row (scored on every user: 0.55), its
    # epoch log the probe's measures (0.59 at the same epoch): the curve stays the probe's, as
    # tune_trials' peak and last value are; a trial that never probed keeps its row's value
    folder = tmp_path / "tune" / "sweep" / "r"
    folder.mkdir(parents=True)
    finished = {"trial_id": "r", "training_iteration": 3, "agr@10/tail": 0.55, "row": "{}", "config": {"attack.margin": 0.4}}
    (folder / "result.json").write_text(json.dumps(finished) + "\n")
    logs = tmp_path / "tune_curves"
    logs.mkdir()
    (logs / "r.json").write_text(json.dumps({"1": {"agr@10/tail": 0.2}, "2": {"agr@10/tail": 0.4}, "3": {"agr@10/tail": 0.59}}))
    unprobed = tmp_path / "tune" / "sweep" / "u"
    unprobed.mkdir(parents=True)
    (unprobed / "result.json").write_text(json.dumps({**finished, "trial_id": "u", "training_iteration": 5}) + "\n")
    curves = trial_curves(tmp_path / "tune")
    r = curves[curves["trial_id"] == "r"]
    assert r["agr@10/tail"].tolist() == [0.2, 0.4, 0.59] and r["config/attack.margin"].tolist() == [0.4, 0.4, 0.4]
    assert curves[curves["trial_id"] == "u"][["epoch", "agr@10/tail"]].values.tolist() == [[5, 0.55]]
    row = trial_table(curves, "agr@10/tail").set_index("trial").loc["r"]
    assert (row["peak"], row["peak_epoch"], row["last"]) == (0.59, 3, 0.59)


def test_settings_are_compared_at_the_epoch_every_trial_reached(sweep):
    curves = trial_curves(sweep / "tune")
    assert common_epoch(curves) == 2
    effects = setting_effects(curves, "agr@10/tail", 2).set_index(["setting", "value"])
    on, off = effects.loc[("attack.probe_training", "True")], effects.loc[("attack.probe_training", "False")]
    assert (on["trials"], on["mean"]) == (1, 0.5) and math.isnan(on["std"])
    assert off["trials"] == 2 and off["mean"] == pytest.approx(0.325) and off["std"] == pytest.approx(0.0353553, rel=1e-5)
    # three distinct margins are few enough to be listed value by value
    assert effects.loc[("attack.margin", "0.9"), "mean"] == pytest.approx(0.35)


def test_numeric_settings_with_many_values_get_a_rank_correlation(tmp_path):
    for i in range(8):
        _trial(tmp_path, f"t{i}", f"t{i}", [0.1 * i], {"attack.lr": 0.001 * (i + 1)})
    effects = setting_effects(trial_curves(tmp_path / "tune"), "agr@10/tail", 1)
    assert len(effects) == 1 and effects.loc[0, "spearman"] == pytest.approx(1.0)


def test_the_page_and_its_errors(sweep, tmp_path):
    page = search_evidence(sweep / "tune", "agr@10/tail")
    assert "3 trials" in page and "at epoch 2" in page and "| c | 0.6 | 3 | 4 | 0.2 |" in page
    with pytest.raises(ConfigError, match="never reported"):
        search_evidence(sweep / "tune", "agr@50")
    with pytest.raises(ConfigError, match="no Tune trial results"):
        trial_curves(tmp_path / "empty")


def test_raysteal_report_on_a_tune_directory_writes_the_search_page(sweep):
    from raysteal.report import render_report
    from raysteal.results.store import ResultStore

    ResultStore(sweep).write_row(
        "r1", {"run_id": "r1", "experiment": "sweep", "attack": "bahsd", "seed": 0, "agr@k": 0.6, "agr@10": 0.6, "agr@10/tail": 0.6}
    )
    (sweep / "tune_spec.json").write_text(json.dumps({"tune": {"metric": "agr@10/tail", "mode": "max"}}))
    report = render_report(sweep)
    assert "[search.md](search.md)" in report.read_text()
    assert "| c | 0.6 | 3 | 4 | 0.2 |" in (report.parent / "search.md").read_text()
    assert (report.parent / "curves.png").is_file()


def test_a_trial_taken_from_elsewhere_keeps_its_settings(sweep):
    # a trial taken --from another checkout ran no result.json here: its curve is in tune_curves/,
    # its sampled settings in tune_imported.json; the evidence page shows both
    (sweep / "tune_curves").mkdir()
    (sweep / "tune_curves" / "z.json").write_text(json.dumps({"1": {"agr@10/tail": 0.4}, "2": {"agr@10/tail": 0.7}}))
    taken = {"trial_id": "z", "config": {"attack.probe_training": True, "attack.margin": 0.7}}
    (sweep / "tune_imported.json").write_text(json.dumps({"sources": ["elsewhere"], "trials": [taken]}))
    curves = trial_curves(sweep / "tune")
    z = curves[curves["trial_id"] == "z"]
    assert z["config/attack.margin"].tolist() == [0.7, 0.7] and z["config/attack.probe_training"].tolist() == [True, True]
    table = trial_table(curves, "agr@10/tail")
    assert table.iloc[0]["trial"] == "z" and table.iloc[0]["attack.margin"] == 0.7
    assert curves[curves["trial_id"] == "a"]["config/attack.margin"].tolist() == [0.2, 0.2, 0.2]  # the others' own
