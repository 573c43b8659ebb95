"""``raysteal tune --from DIR``: a sweep goes on from the trials another checkout published (its
``tune_trials.parquet``), taking only trials of this very sweep, counting them towards
``num_samples`` and telling Optuna their results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from raysteal.errors import ConfigError
from raysteal.experiment.tune_config import load_tune, parse_tune
from tests.test_tune import BASE, SPACE, _Grid, _reported, _Result, _sweep

OPTUNA = {"metric": "agr@k/heldout", "searcher": "optuna", "num_samples": 3, "seed": 3, "scheduler": None}


def _trial(sweep, trial_id: str, config: dict, peak: float, run_id: str | None = None) -> dict:
    from raysteal.distributed.tune import trial_run

    rid = run_id or trial_run(sweep.base_run(), sweep.name, config, trial_id).id
    return {
        "trial_id": trial_id,
        "status": "completed",
        "run_id": rid,
        "config": json.dumps(config),
        "peak_value": peak,
        "peak_epoch": 3,
        "peak_phase": "clone",
        "peak_phase_epoch": 3,
        "last_value": peak - 0.01,
        "final_value": peak - 0.02,
        "epochs_run": 4,
        "epochs_reported": 4,
        "metric": "agr@k/heldout",
        "rule": "r",
    }


def _published(folder: Path, trials: list[dict]) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame(trials).to_parquet(folder / "tune_trials.parquet")
    return folder


CONFIGS = [
    {"attack.margin": 0.5, "attack.lr": 1e-3, "budget": 20},
    {"attack.margin": 0.7, "attack.lr": 3e-3, "budget": 40},
]


def test_only_trials_of_this_very_sweep_are_taken(tmp_path):
    from raysteal.distributed.tune_import import earlier_trials

    sweep = parse_tune({**BASE, "search_space": SPACE, "tune": OPTUNA})
    other = parse_tune({**BASE, "experiment": "another-sweep", "search_space": SPACE, "tune": OPTUNA})
    mine = [_trial(sweep, "a1", CONFIGS[0], 0.6), _trial(sweep, "a2", CONFIGS[1], 0.7)]
    forged = _trial(sweep, "a3", CONFIGS[1], 0.9, run_id="0" * 24)  # its run id is not this sweep's
    source = _published(tmp_path / "pub", [*mine, forged])

    taken = earlier_trials(sweep, [source])

    assert [t["trial_id"] for t in taken] == ["a1", "a2"]
    assert taken[0]["config"] == CONFIGS[0] and taken[1]["peak_value"] == 0.7
    assert {t["imported_from"] for t in taken} == {str(source)}
    with pytest.raises(ConfigError, match="none of its 3 trials belongs to sweep 'another-sweep'"):
        earlier_trials(other, [source])
    grid = parse_tune({**BASE, "search_space": {"attack.lr": {"grid": [1e-3, 1e-2]}}, "tune": OPTUNA | {"searcher": None}})
    with pytest.raises(ConfigError, match="grid keys"):
        earlier_trials(grid, [source])


def test_an_interrupted_sweeps_published_rows_give_its_trials(tmp_path):
    # an interrupted sweep writes no trial summary; its rows (finished and scheduler-stopped
    # trials), as raysteal report exports them, are enough
    from raysteal.distributed.tune_import import earlier_trials
    from raysteal.results.store import ResultStore

    sweep = parse_tune({**BASE, "search_space": SPACE, "tune": OPTUNA})
    store = ResultStore(tmp_path / "ran")
    for trial, status in (("a1", "completed"), ("a2", "stopped_early")):
        config = CONFIGS[0] if trial == "a1" else CONFIGS[1]
        summary = _trial(sweep, trial, config, 0.6 if trial == "a1" else 0.5)
        row = {
            "run_id": summary["run_id"],
            "experiment": sweep.name,
            "attack": "ptq",
            "sweep": sweep.name,
            "tune_trial": trial,
            "tune_config": summary["config"],
            "tune_status": status,
            "tune_epochs": 4 if status == "completed" else 2,
            "tune_peak": summary["peak_value"],
            "tune_peak_epoch": 2,
            "tune_peak_phase": "clone",
            "tune_peak_phase_epoch": 2,
            "tune_last": 0.45,
        }
        if status == "completed":
            row["agr@k/heldout"] = 0.58
        store.write_row(row["run_id"], row)
    store.write_row("other", {"run_id": "other", "experiment": "x", "attack": "ptq", "sweep": "another-sweep", "tune_trial": "b1"})
    published = tmp_path / "docs" / "search"
    published.mkdir(parents=True)
    shutil.copy(store.export(), published / "results.parquet")

    for source in (tmp_path / "ran", published):  # the sweep's OUT, and its published folder
        taken = {t["trial_id"]: t for t in earlier_trials(sweep, [source])}
        assert sorted(taken) == ["a1", "a2"]
        assert taken["a1"]["status"] == "completed" and taken["a1"]["final_value"] == 0.58 and taken["a1"]["peak_value"] == 0.6
        assert taken["a2"]["status"] == "stopped_early" and taken["a2"]["final_value"] is None
        assert (taken["a2"]["peak_phase"], taken["a2"]["peak_phase_epoch"], taken["a2"]["epochs_run"]) == ("clone", 2, 2)
        assert taken["a2"]["config"] == CONFIGS[1]
    with pytest.raises(ConfigError, match="no tune_trials.parquet or .json there, and no rows"):
        earlier_trials(sweep, [tmp_path / "docs"])

    # the taken trials' rows come along too, so the new OUT exports (and publishes) every trial
    from raysteal.distributed.tune_import import trials_for_sweep

    for source in (tmp_path / "ran", published):
        out = tmp_path / f"out-{source.name}"
        trials_for_sweep(out, sweep, [source], started=False)
        exported = pd.read_parquet(ResultStore(out).export())
        assert sorted(exported["tune_trial"]) == ["a1", "a2"]  # not another sweep's row
        assert exported.set_index("tune_trial").loc["a1", "agr@k/heldout"] == 0.58


def test_the_taken_trials_are_recorded_once_and_a_started_sweep_refuses_new_ones(tmp_path):
    from raysteal.distributed.tune_import import IMPORTS_FILE, trials_for_sweep

    sweep = parse_tune({**BASE, "search_space": SPACE, "tune": OPTUNA})
    source = _published(tmp_path / "pub", [_trial(sweep, "a1", CONFIGS[0], 0.6)])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigError, match="started without it"):
        trials_for_sweep(out, sweep, [source], started=True)
    with pytest.raises(ConfigError, match="nowhere: not a directory"):
        trials_for_sweep(out, sweep, [tmp_path / "nowhere"], started=False)
    assert trials_for_sweep(out, sweep, [], started=False) == []

    (source / "tune_curves").mkdir()
    curve = json.dumps({"1": {"agr@k/heldout": 0.5}, "2": {"agr@k/heldout": 0.6}})
    (source / "tune_curves" / "a1.json").write_text(curve)
    (source / "tune_curves" / "zz.json").write_text(curve)  # not a trial of this sweep: not copied
    first = trials_for_sweep(out, sweep, [source], started=False)
    assert [t["trial_id"] for t in first] == ["a1"] and (out / IMPORTS_FILE).is_file()
    # the taken trial's curve comes along, for the search report to draw
    assert sorted(p.name for p in (out / "tune_curves").iterdir()) == ["a1.json"]
    assert (out / "tune_curves" / "a1.json").read_text() == curve
    shutil.rmtree(source)  # resuming reads the record, not the source
    assert trials_for_sweep(out, sweep, [], started=True) == first
    with pytest.raises(ConfigError, match="took its trials from"):
        trials_for_sweep(out, sweep, [tmp_path / "elsewhere"], started=True)


def test_taken_trials_count_towards_the_sweep_and_can_be_its_best(tmp_path):
    from raysteal.distributed.tune import _finish
    from raysteal.distributed.tune_import import earlier_trials

    sweep = parse_tune({**BASE, "search_space": SPACE, "tune": OPTUNA})
    taken = earlier_trials(
        sweep, [_published(tmp_path / "pub", [_trial(sweep, "a1", CONFIGS[0], 0.6), _trial(sweep, "a2", CONFIGS[1], 0.9)])]
    )
    here = _Grid([_Result("t0", {"attack.lr": 1e-3, "attack.margin": 0.3, "budget": 20}, _reported(0.65, 2, "clone", 2, 0.6, 2))])

    outcome = _finish(sweep, here, tmp_path, str(tmp_path / "tune"), resumed=False, imported=taken)

    assert outcome.trials == 3 and outcome.imported == 2 and outcome.best_trial == "a2" and outcome.best_metric == 0.9
    summary = json.loads((tmp_path / "tune_trials.json").read_text())
    assert summary["imported"] == 2 and [t["imported_from"] != "" for t in summary["trials"]] == [True, True, False]
    assert "attack:" in (tmp_path / "best.yaml").read_text()
    # one trial short of num_samples, even with the taken ones: not finished
    from raysteal.errors import RaystealError

    with pytest.raises(RaystealError, match=r"did not finish \(2 of 3 trials started\)"):
        _finish(sweep, _Grid([]), tmp_path, str(tmp_path / "tune"), resumed=False, imported=taken)


def test_optuna_is_told_the_taken_trials_and_draws_anew():
    pytest.importorskip("optuna")
    from raysteal.distributed.tune import _searcher
    from raysteal.experiment.tune_config import TuneSettings

    settings = TuneSettings(searcher="optuna", seed=5)
    taken = [{"config": CONFIGS[0], "peak_value": 0.6}, {"config": CONFIGS[1], "peak_value": 0.7}]
    told = _searcher(settings, taken)
    assert told._points_to_evaluate == CONFIGS and told._evaluated_rewards == [0.6, 0.7]
    assert told._seed != 5  # not the first sweep's draws again
    assert _searcher(settings)._seed == 5


@pytest.mark.ray
def test_a_sweep_goes_on_from_a_published_trial_summary(ray_session, tmp_path, target_cache):
    pytest.importorskip("optuna")
    import pickle

    from raysteal.distributed.tune import run_tune

    space = {"attack.lr": {"loguniform": [1e-4, 1e-2]}, "attack.margin": {"uniform": [0.1, 1.0]}}
    first = run_tune(
        load_tune(_sweep(tmp_path, "goes-on", space, OPTUNA | {"num_samples": 2})), tmp_path / "first", cache_dir=target_cache, verbose=0
    )
    assert first.trials == 2
    published = tmp_path / "docs" / "goes-on"
    published.mkdir(parents=True)
    shutil.copy(tmp_path / "first" / "tune_trials.parquet", published)

    out = tmp_path / "second"
    outcome = run_tune(load_tune(_sweep(tmp_path, "goes-on", space, OPTUNA)), out, cache_dir=target_cache, verbose=0, sources=[published])

    assert outcome.trials == 3 and outcome.imported == 2
    summary = json.loads((out / "tune_trials.json").read_text())
    before = json.loads((tmp_path / "first" / "tune_trials.json").read_text())["trials"]
    new = [t for t in summary["trials"] if not t["imported_from"]]
    assert len(new) == 1 and new[0]["config"] not in [t["config"] for t in before]
    assert len(list((out / "runs").glob("*.parquet"))) == 1  # only the new trial ran here
    state = pickle.loads(max((out / "tune" / "goes-on").glob("searcher-state-*.pkl")).read_bytes())
    told = sorted(t.value for t in state["_ot_study"].trials if t.state.name == "COMPLETE")
    assert told == pytest.approx(sorted(t["peak_value"] for t in summary["trials"]))
