"""The evidence page of a Tune search, read from Tune's per-trial result.json files."""

from __future__ import annotations

import json
import math

import pytest

from raysteal.errors import ConfigError
from raysteal.report.search import common_epoch, search_evidence, setting_effects, trial_curves, trial_table


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
