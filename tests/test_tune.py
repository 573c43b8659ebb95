"""``raysteal tune``: validation before launch, the epoch callback, ASHA stopping, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from raysteal.errors import ConfigError
from raysteal.experiment.tune_config import load_tune, parse_tune

BASE = {
    "experiment": "tiny-tune",
    "datasets": [{"name": "synthetic", "options": {"num_users": 400, "num_items": 300, "max_len": 60, "seed": 1}}],
    "targets": [{"model": "bpr", "train": {"epochs": 8, "batch_size": 512}}],
    "attacks": [{"attack": "ptq", "epochs": 4, "finetune_epochs": 4, "batch_size": 256}],
    "split": {"attacker_fraction": 0.3},
    "k": 20,
}
SPACE = {"attack.margin": {"uniform": [0.1, 1.0]}, "attack.lr": {"loguniform": [1e-4, 1e-2]}, "budget": {"choice": [20, 40]}}


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "space, tune, key",
    [
        ({"attack.margin": {"uniformly": [0.1, 1.0]}}, {}, r"search_space\.attack\.margin: unknown distribution 'uniformly'"),
        ({"attack.lr": {"choice": []}}, {}, r"search_space\.attack\.lr: choice needs at least one value"),
        ({"budget": {"grid": []}}, {}, r"search_space\.budget: grid needs at least one value"),
        ({"attack.margn": {"uniform": [0.1, 1.0]}}, {}, r"search_space\.attack\.margn.*unknown key 'margn'"),
        ({"attack.margin": {"uniform": [-1.0, 1.0]}}, {}, r"search_space\.attack\.margin.*margin"),
        ({"attack.epochs": {"uniform": [2, 9]}}, {}, r"search_space\.attack\.epochs.*integer"),
        ({"attack.lr": {"loguniform": [0.0, 0.1]}}, {}, r"search_space\.attack\.lr: loguniform needs low > 0"),
        ({"attack.epochs": {"randn": [3, 1]}}, {}, r"search_space\.attack\.epochs.*integer"),  # draws are fractional
        ({"attack.lr": {"uniform": [0.1]}}, {}, r"search_space\.attack\.lr: uniform takes"),
        ({"budget": {"choice": [10, -5]}}, {}, r"search_space\.budget: budgets must be"),
        ({"target.embedding_dim": {"choice": [8, 16]}}, {}, r"search_space\.target\.embedding_dim: cannot be searched"),
        ({"split.aux_fraction": {"uniform": [0.2, 0.5]}}, {}, r"search_space\.split\.aux_fraction: cannot be searched"),
        ({"atack.lr": {"uniform": [0.1, 0.2]}}, {}, r"search_space\.atack\.lr: keys must"),
        (SPACE, {"metric": "agr@50"}, r"tune\.metric: 'agr@50' is not reported"),
        (SPACE, {"metric": "clone_ndcg@k"}, r"tune\.metric: 'clone_ndcg@k' is not reported \(ASHA"),
        (SPACE, {"mode": "maximise"}, r"tune\.mode"),
        (SPACE, {"scheduler": {"hyperband": {}}}, r"tune\.scheduler"),
        ({}, {}, r"search_space: a tune file needs"),
    ],
)
def test_bad_search_space_fails_before_launch_naming_the_key(space, tune, key):
    with pytest.raises(ConfigError, match=key):
        parse_tune({**BASE, "search_space": space, "tune": tune})


def test_more_than_one_cell_and_heldout_without_heldout_users_are_refused():
    with pytest.raises(ConfigError, match="one run cell"):
        parse_tune({**BASE, "attacks": [*BASE["attacks"], {**BASE["attacks"][0], "epochs": 2}], "search_space": SPACE})
    with pytest.raises(ConfigError, match=r"only_seeds: does not apply to a tune file"):
        parse_tune({**BASE, "seeds": 3, "only_seeds": [1], "search_space": SPACE})
    with pytest.raises(ConfigError, match=r"tune\.metric.*query_fraction is 1"):
        parse_tune({**BASE, "split": {"query_fraction": 1.0}, "search_space": SPACE})
    ok = parse_tune({**BASE, "search_space": SPACE, "tune": {"scheduler": None, "metric": "clone_ndcg@k"}})
    assert ok.tune.scheduler is None  # a final-only metric is fine without ASHA


def test_the_default_scheduler_is_the_documented_asha_and_fifo_turns_it_off():
    default = parse_tune({**BASE, "search_space": SPACE}).tune.scheduler
    assert default is not None and (default.grace_period, default.reduction_factor) == (5, 2.0)  # docs/reference/tune-file.md
    assert parse_tune({**BASE, "search_space": SPACE, "tune": {"scheduler": "fifo", "metric": "clone_ndcg@k"}}).tune.scheduler is None


@pytest.mark.parametrize("searcher", ["optuna", "hyperopt"])
def test_searchers_need_their_package(searcher):
    import importlib.util

    spec = {**BASE, "search_space": SPACE, "tune": {"searcher": searcher}}
    if importlib.util.find_spec(searcher) is None:
        with pytest.raises(ConfigError, match=rf"tune\.searcher: '{searcher}' is not installed"):
            parse_tune(spec)
    else:
        assert parse_tune(spec).tune.searcher == searcher
        with pytest.raises(ConfigError, match="grid is not supported"):
            parse_tune({**spec, "search_space": {"attack.lr": {"grid": [0.1, 0.2]}}})


def test_cli_refuses_a_bad_file_before_starting_anything(tmp_path):
    from typer.testing import CliRunner

    from raysteal.cli import app

    bad = _write(tmp_path / "bad.yaml", {**BASE, "search_space": {"attack.lr": {"choice": []}}})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["tune", str(bad), "--out", str(out)])
    assert isinstance(result.exception, ConfigError) and "search_space.attack.lr" in str(result.exception)
    assert not out.exists()
    good = _write(tmp_path / "good.yaml", {**BASE, "search_space": SPACE})
    empty_storage = CliRunner().invoke(app, ["tune", str(good), "--out", str(out), "--storage", " "])
    assert empty_storage.exit_code != 0 and "--storage: an empty path" in empty_storage.output  # not quietly OUT/tune
    assert not out.exists()


def test_epoch_callback_numbers_clone_epochs_across_phases_and_can_stop():
    """The callback sees clone epochs only (not the auxiliary model's), numbered across phases;
    a passive callback changes nothing; returning True stops training."""
    import torch

    from raysteal.attacks import Knowledge, run_attack
    from raysteal.data import load_dataset

    log = load_dataset("synthetic", num_users=200, num_items=120, max_len=30, seed=3)
    kn = Knowledge(target_data=log, target_user_ids=np.arange(log.num_users), auxiliary=log)
    cfg = {"attack": "pta", "epochs": 3, "aux_epochs": 2, "batch_size": 256, "embedding_dim": 8}
    seen = []

    def watch(epoch, stats):
        seen.append((epoch, stats["phase"], stats["phase_epoch"]))
        stats["model"].score(torch.arange(4))  # what a probe does

    plain = run_attack(cfg, kn, None, seed=0, device="cpu")
    watched = run_attack(cfg, kn, None, seed=0, device="cpu", on_epoch=watch)
    assert seen == [(1, "clone", 1), (2, "clone", 2), (3, "clone", 3)]
    users = torch.arange(log.num_users)
    assert torch.equal(plain.clone.score(users), watched.clone.score(users))
    assert watched.info["clone_epochs"] == 3 and watched.info["stopped_early"] is False

    stopped = run_attack(cfg, kn, None, seed=0, device="cpu", on_epoch=lambda epoch, stats: epoch >= 2)
    assert stopped.info["clone_epochs"] == 2 and stopped.info["stopped_early"] is True
    assert stopped.info["clone"] == {"epochs": 2, "stopped": True}


def _sweep(tmp_path: Path, name: str, space: dict, tune: dict) -> Path:
    return _write(tmp_path / f"{name}.yaml", {**BASE, "experiment": name, "search_space": space, "tune": tune})


@pytest.mark.ray
def test_asha_stops_bad_trials_early_and_writes_best(ray_session, tmp_path, target_cache):
    from raysteal.distributed.tune import run_tune
    from raysteal.experiment.config import load_experiment
    from raysteal.results import ResultStore

    # trial 0 learns (lr 1e-2), the others barely move (lr 1e-5); one at a time, so each bad
    # trial meets trial 0's value at the first rung and is cut there
    file = _sweep(
        tmp_path,
        "asha",
        {"attack.lr": {"grid": [1e-2, 1e-5, 1e-5]}, "attack.margin": {"uniform": [0.1, 1.0]}, "budget": {"choice": [30, 60]}},
        {"metric": "agr@k/heldout", "scheduler": {"asha": {"grace_period": 2, "reduction_factor": 2}}, "max_concurrent": 1},
    )
    out = tmp_path / "out"
    outcome = run_tune(load_tune(file), out, cache_dir=target_cache, verbose=0)
    assert outcome.trials == 3 and outcome.stopped_early >= 1 and not outcome.resumed
    frame = ResultStore(out).load()
    assert len(frame) == 3 and frame["tune_trial"].nunique() == 3
    stopped = frame[frame.tune_status == "stopped_early"]
    assert len(stopped) == outcome.stopped_early and (stopped["tune_epochs"] < 8).all()
    assert stopped["agr@k/heldout"].notna().all() and stopped["queries"].notna().all()  # its last epoch's report
    done = frame[frame.tune_status == "completed"]
    assert (done["tune_epochs"] == 8).all()  # epochs 4 + finetune 4
    assert set(frame["hp/lr"].round(8)) == {1e-2, 1e-5}
    assert frame["budget"].isin([30, 60]).all()
    logs = ResultStore(out).load_query_logs()
    spent = logs[logs.granted].groupby("attacker")["count"].sum()
    for row in done.itertuples():  # every trial had its own account with its sampled budget
        assert spent[row.run_id] == row.queries <= row.budget
    assert outcome.best_config["attack.lr"] == 1e-2
    best = load_experiment(out / "best.yaml")
    assert best.attacks[0]["lr"] == 1e-2 and best.budget == outcome.best_config["budget"]
    assert best.experiment == "asha-best"


def _terminated_trials(path) -> set[str]:
    """Ids of the trials a saved Tune experiment state records as finished (none while unreadable)."""
    from ray.tune import ExperimentAnalysis

    try:
        return {t.trial_id for t in ExperimentAnalysis(str(path)).trials if t.status == "TERMINATED"}
    except Exception:  # noqa: BLE001 - not written yet, or mid-write
        return set()


@pytest.mark.ray
def test_killed_sweep_resumes_without_rerunning_finished_trials(ray_session, tmp_path, target_cache):
    from raysteal.distributed.tune import run_tune
    from raysteal.results import ResultStore

    lrs = [1e-2, 5e-3, 2e-3, 1e-3]
    spec = {
        **BASE,
        "experiment": "resume",
        "attacks": [{"attack": "ptq", "epochs": 10, "finetune_epochs": 10, "batch_size": 64}],  # ~1 s a trial
        "split": {"attacker_fraction": 1.0},
        "search_space": {"attack.lr": {"grid": lrs}},
        "tune": {"metric": "agr@k/heldout", "scheduler": None, "max_concurrent": 1},
    }
    file = _write(tmp_path / "resume.yaml", spec)
    out, cache = tmp_path / "out", target_cache
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_AIR_NEW_OUTPUT": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TUNE_GLOBAL_CHECKPOINT_S": "0.5",
    }
    address = ray_session.get_runtime_context().gcs_address
    cmd = [
        sys.executable,
        "-m",
        "raysteal",
        "tune",
        str(file),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--address",
        address,
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    runs = out / "runs"
    try:
        deadline = time.monotonic() + 150
        # until the experiment state (saved every 0.5 s) records a finished trial; on a loaded
        # machine a fixed wait after the first row was not always enough
        while not (any(runs.glob("*.parquet")) and _terminated_trials(out / "tune" / "resume")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole driver at once, no chance to clean up
        proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.parquet")}
    # what the saved experiment state knew at the kill: those trials must not run again
    finished = _terminated_trials(out / "tune" / "resume")
    assert 1 <= len(finished) < len(lrs), finished

    outcome = run_tune(load_tune(file), out, cache_dir=str(cache), verbose=0)
    assert outcome.resumed and outcome.trials == len(lrs) and outcome.completed == len(lrs)
    frame = ResultStore(out).load()
    assert len(frame) == len(lrs) and frame["tune_trial"].nunique() == len(lrs)
    assert sorted(frame["hp/lr"]) == sorted(lrs)
    after = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.parquet")}
    for row in frame[frame.tune_trial.isin(finished)].itertuples():
        assert after[f"{row.run_id}.parquet"] == before[f"{row.run_id}.parquet"], f"trial {row.tune_trial} ran again"
    assert (out / "best.yaml").is_file()


def test_the_schema_expresses_a_bahsd_sweep():
    """Temperatures, margin, InfoNCE weight and temperature, and the budget of a sequential
    extraction (BAHSD) validate against the extraction config."""
    spec = {
        "experiment": "bahsd-tune",
        "datasets": [{"name": "synthetic", "options": {"num_users": 300, "num_items": 200, "seed": 1}}],
        "targets": [{"model": "sasrec", "params": {"max_len": 20}, "train": {"epochs": 2}}],
        "attacks": [{"attack": "bahsd", "budget_queries": 2000, "epochs": 3}],
        "split": {"aux_fraction": 0.0},
        "k": 10,
        "search_space": {
            "attack.t_min": {"uniform": [0.5, 2.0]},
            "attack.t_max": {"uniform": [2.0, 8.0]},
            "attack.margin": {"uniform": [0.1, 1.0]},
            "attack.infonce_weight": {"loguniform": [0.01, 1.0]},
            "attack.infonce_tau": {"uniform": [0.05, 0.5]},
            "budget": {"choice": [1000, 2000, 5000]},
        },
        "tune": {"metric": "agr@10/tail"},
    }
    sweep = parse_tune(spec)
    assert set(sweep.search_space) >= {"attack.t_min", "attack.infonce_tau", "budget"}
    with pytest.raises(ConfigError, match=r"search_space\.attack\.infonce_tau.*infonce_tau"):
        parse_tune({**spec, "search_space": {"attack.infonce_tau": {"uniform": [-0.5, 0.5]}}})
    with pytest.raises(ConfigError, match=r"tune\.metric: 'agr@k/heldout' is not reported"):
        parse_tune({**spec, "tune": {"metric": "agr@k/heldout"}})


SEQ_SWEEP = {
    "experiment": "bahsd-tiny-tune",
    "datasets": [{"name": "synthetic", "options": {"num_users": 300, "num_items": 120, "max_len": 30, "seed": 3}}],
    "targets": [
        {
            "model": "sasrec",
            "params": {"max_len": 20, "embedding_dim": 16, "num_blocks": 1},
            "train": {"epochs": 4, "batch_size": 64, "lr": 3e-3},
        }
    ],
    "attacks": [
        {
            "attack": "bahsd",
            "budget_queries": 400,
            "k": 20,
            "epochs": 4,
            "batch_size": 64,
            "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1},
        }
    ],
    "split": {"aux_fraction": 0.0},
    "k": 10,
    "search_space": {
        "attack.lr": {"grid": [1e-2, 1e-6, 1e-6]},
        "attack.t_max": {"uniform": [2.0, 8.0]},
        "attack.infonce_weight": {"loguniform": [0.01, 1.0]},
        "budget": {"choice": [300, 400]},
    },
    "tune": {"metric": "agr@10", "scheduler": {"asha": {"grace_period": 1, "reduction_factor": 2}}, "max_concurrent": 1},
}


@pytest.mark.ray
def test_a_bahsd_sweep_reports_every_student_epoch_and_writes_best(ray_session, tmp_path, target_cache):
    from raysteal.distributed.tune import run_tune
    from raysteal.experiment.config import load_experiment
    from raysteal.results import ResultStore

    file = _write(tmp_path / "seq.yaml", SEQ_SWEEP)
    out = tmp_path / "out"
    outcome = run_tune(load_tune(file), out, cache_dir=target_cache, verbose=0)
    assert outcome.trials == 3 and outcome.errored == 0
    frame = ResultStore(out).load()
    assert len(frame) == 3
    for col in ("agr@10", "agr@10/head", "agr@10/tail", "queries"):
        assert frame[col].notna().all(), col
    assert (frame["queries"] <= frame["hp/budget_queries"].max()).all()
    assert outcome.stopped_early >= 1  # the lr-1e-6 students do not move: ASHA cuts one at a rung
    best = load_experiment(out / "best.yaml")
    assert best.attacks[0]["attack"] == "bahsd" and best.attacks[0]["lr"] == pytest.approx(1e-2)


def _settled(path: Path, quiet: float = 1.0, limit: float = 30.0) -> None:
    """Wait until ``path`` has not changed for ``quiet`` seconds (a killed driver's trial worker
    may finish one more epoch before Ray reaps it)."""
    deadline = time.monotonic() + limit
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp != last:
            last, since = stamp, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


@pytest.mark.ray
def test_a_sequential_trial_killed_mid_training_resumes_from_its_epoch(ray_session, tmp_path, target_cache):
    """``raysteal tune`` SIGKILLed while a DFME trial trains, then run again: Tuner.restore starts
    the trial over, and the trial goes on from the answers and student epoch it saved."""
    from raysteal.distributed.tune import run_tune
    from raysteal.oracle.ledger import BudgetLedger
    from raysteal.results import ResultStore

    budget, epochs = 1200, 150
    spec = {
        **SEQ_SWEEP,
        "experiment": "seq-resume",
        "attacks": [
            {
                "attack": "dfme",
                "budget_queries": budget,
                "k": 20,
                "epochs": epochs,
                "batch_size": 16,
                "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1},
            }
        ],
        "search_space": {"attack.lr": {"grid": [3e-3]}},
        "tune": {"metric": "agr@10", "scheduler": None, "max_concurrent": 1},
    }
    file = _write(tmp_path / "seq-resume.yaml", spec)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_AIR_NEW_OUTPUT": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TUNE_GLOBAL_CHECKPOINT_S": "0.5",
    }
    address = ray_session.get_runtime_context().gcs_address
    cmd = [
        sys.executable,
        "-m",
        "raysteal",
        "tune",
        str(file),
        "--out",
        str(out),
        "--cache-dir",
        str(target_cache),
        "--address",
        address,
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        # mid-training (a student epoch saved) and the sweep's state on disk (so it can be restored)
        while not (list((out / "partial").glob("*/student.state")) and list((out / "tune" / "seq-resume").glob("experiment_state*.json"))):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the trial never saved a student epoch"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    state = next((out / "partial").glob("*/student.state"))
    _settled(state)
    assert not list((out / "runs").glob("*.parquet"))

    outcome = run_tune(load_tune(file), out, cache_dir=str(target_cache), verbose=0)
    assert outcome.resumed and outcome.completed == 1
    row = ResultStore(out).load().iloc[0]
    assert row["info/data_reused"] and 1 <= row["info/resumed_epoch"] < epochs
    assert row["info/epochs_run"] == epochs and row["tune_epochs"] == epochs and row["queries"] == budget
    spent = {}
    for journal in sorted((out / "ledgers").glob("*/ledger.jsonl")):
        ledger = BudgetLedger(journal)
        spent[journal.parent.name] = ledger.snapshot().get(row["run_id"], {}).get("spent")
        ledger.close()
    assert sorted(spent.values()) == [0, budget], spent  # the killed sweep paid; the restored one did not
    assert not (out / "partial" / row["run_id"]).exists()
    # its peak is over every epoch, those the killed sweep reported included (kept in its scratch)
    trial = json.loads((out / "tune_trials.json").read_text())["trials"][0]
    assert trial["epochs_reported"] == epochs and trial["epochs_run"] == epochs
    assert trial["peak_value"] == pytest.approx(row["tune_peak"]) and 1 <= trial["peak_epoch"] <= epochs


# ------------------------------------------------------------------ peaks, best.yaml, searchers
@pytest.mark.parametrize(
    "tune, key",
    [
        ({"searcher": "tpe"}, r"tune\.searcher: unknown searcher 'tpe'; known: optuna"),
        ({"searcher": 3}, r"tune\.searcher: unknown searcher 3"),
        ({"searcher": {"optuna": {}}}, r"tune\.searcher: unknown searcher"),
    ],
)
def test_an_unknown_searcher_is_refused_naming_the_key(tune, key):
    with pytest.raises(ConfigError, match=key):
        parse_tune({**BASE, "search_space": SPACE, "tune": tune})


def test_optuna_refuses_what_it_cannot_sample_naming_the_key():
    pytest.importorskip("optuna")
    ok = parse_tune({**BASE, "search_space": SPACE, "tune": {"searcher": "optuna", "max_concurrent": 2}})
    assert ok.tune.searcher == "optuna" and ok.tune.max_concurrent == 2
    assert parse_tune({**BASE, "search_space": SPACE, "tune": {"searcher": "random"}}).tune.searcher is None
    for space, key in [
        ({"attack.margin": {"randn": [0.5, 0.1]}}, r"search_space\.attack\.margin: randn is not supported with searcher 'optuna'"),
        (
            {"attack.lr": {"qloguniform": [1e-4, 1e-2, 1e-4]}},
            r"search_space\.attack\.lr: qloguniform is not supported with searcher 'optuna'",
        ),
        ({"attack.lr": {"grid": [1e-3, 1e-2]}}, r"search_space\.attack\.lr: grid is not supported with searcher 'optuna'; use choice"),
    ]:
        with pytest.raises(ConfigError, match=key):
            parse_tune({**BASE, "search_space": space, "tune": {"searcher": "optuna"}})


def test_the_optuna_searcher_is_seeded_limited_and_learns_from_the_peak():
    pytest.importorskip("optuna")
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from raysteal.distributed.tune import PEAK_KEY, _searcher
    from raysteal.experiment.tune_config import TuneSettings

    limited = _searcher(TuneSettings(searcher="optuna", max_concurrent=2, seed=5, mode="min"))
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 2
    assert isinstance(limited.searcher, OptunaSearch)
    assert (limited.searcher.metric, limited.searcher.mode, limited.searcher._seed) == (PEAK_KEY, "min", 5)
    free = _searcher(TuneSettings(searcher="optuna"))
    assert isinstance(free, OptunaSearch) and free.metric == PEAK_KEY and free._seed == 0


def test_the_peak_tracker_keeps_the_best_epoch_and_survives_a_restart(tmp_path):
    from raysteal.distributed.tune import PEAK_KEY, PeakTracker

    path = tmp_path / "peaks.json"
    peaks = PeakTracker("max", path)
    for epoch, value in enumerate([0.2, 0.5, float("nan"), 0.5, 0.4], start=1):
        peaks.update(epoch, value, "clone" if epoch <= 3 else "steal", epoch if epoch <= 3 else epoch - 3)
    got = peaks.fields()
    # the earliest of equal peaks (cheapest to reproduce); NaN never peaks
    assert (got[PEAK_KEY], got["tune_peak_epoch"], got["tune_peak_phase"], got["tune_peak_phase_epoch"]) == (0.5, 2, "clone", 2)
    assert got["tune_last"] == 0.4 and got["tune_epochs_reported"] == 5
    again = PeakTracker("max", path)  # a trial resumed mid-training knows the epochs it reported
    assert again.fields() == got
    again.update(2, 0.3, "clone", 2)  # training restarted at epoch 2: it and every later epoch are replaced
    assert again.fields()[PEAK_KEY] == 0.3 and again.fields()["tune_epochs_reported"] == 2
    low = PeakTracker("min")
    for epoch, value in enumerate([0.4, 0.1, 0.3], start=1):
        low.update(epoch, value, "student", epoch)
    assert (low.fields()[PEAK_KEY], low.fields()["tune_peak_epoch"]) == (0.1, 2)
    assert np.isnan(PeakTracker("max").fields()[PEAK_KEY])


def test_a_smoothed_peak_window_ignores_one_lucky_epoch_and_survives_a_restart(tmp_path):
    """tune.peak_window: the peak is read off the centred moving average, so a single lucky probe
    (0.9 at epoch 3) loses to a steady plateau; its value and epoch are the average's."""
    from raysteal.distributed.tune import PEAK_KEY, PeakTracker

    curve = [0.3, 0.3, 0.9, 0.3, 0.3, 0.6, 0.62, 0.6, 0.58]
    raw, smooth = PeakTracker("max"), PeakTracker("max", tmp_path / "peaks.json", window=3)
    for epoch, value in enumerate(curve, start=1):
        raw.update(epoch, value, "student", epoch)
        smooth.update(epoch, value, "student", epoch)
    assert (raw.fields()[PEAK_KEY], raw.fields()["tune_peak_epoch"]) == (0.9, 3)
    # centred 3-epoch means: 0.3, 0.5, 0.5, 0.5, 0.4, 0.5067, 0.6067, 0.6, 0.59
    got = smooth.fields()
    assert got[PEAK_KEY] == pytest.approx(1.82 / 3) and got["tune_peak_epoch"] == 7 and got["tune_last"] == 0.58
    again = PeakTracker("max", tmp_path / "peaks.json", window=3)  # a resumed trial reads its epochs back
    assert again.fields() == got
    again.update(3, 0.1, "student", 3)  # restarted at epoch 3: [0.3, 0.3, 0.1] -> means 0.3, 0.2333, 0.2
    assert again.fields()[PEAK_KEY] == pytest.approx(0.3) and again.fields()["tune_peak_epoch"] == 1
    steady = PeakTracker("max", window=5)
    for epoch, value in enumerate([0.5, float("nan"), 0.7, 0.7, 0.7, 0.1], start=1):
        steady.update(epoch, value, "student", epoch)
    # a NaN epoch is skipped inside each window: means 0.6, 0.6333, 0.65, 0.55, 0.55, 0.5
    assert steady.fields()[PEAK_KEY] == pytest.approx(0.65) and steady.fields()["tune_peak_epoch"] == 3
    low = PeakTracker("min", window=3)
    for epoch, value in enumerate([0.4, 0.0, 0.4, 0.2, 0.15, 0.2, 0.3], start=1):
        low.update(epoch, value, "student", epoch)
    # raw minimum 0.0 at epoch 2; means 0.2, 0.2667, 0.2, 0.25, 0.1833, 0.2167, 0.25
    assert low.fields()[PEAK_KEY] == pytest.approx(0.55 / 3) and low.fields()["tune_peak_epoch"] == 5


def test_an_interrupted_sweep_is_not_summarised_as_finished(tmp_path):
    """Ctrl-C hands back only the trials Tune had started, the one in flight counted as ended:
    with fewer than num_samples x grid points, no best.yaml is written and the error says how many
    started and that the same command resumes it."""
    from raysteal.distributed.tune import _finish, planned_trials
    from raysteal.errors import RaystealError

    space = {**SPACE, "attack.margin": {"grid": [0.3, 0.6]}}
    sweep = parse_tune({**BASE, "search_space": space, "tune": {"metric": "agr@k/heldout", "num_samples": 3}})
    assert planned_trials(sweep) == 6
    started = _Grid(
        [_Result(f"t{i}", {"attack.lr": 1e-3, "attack.margin": 0.3, "budget": 20}, _reported(0.6, 2, "clone", 2, 0.6, 2)) for i in range(5)]
    )
    with pytest.raises(RaystealError, match=r"did not finish \(5 of 6 trials started\); run the same command again"):
        _finish(sweep, started, tmp_path, str(tmp_path / "tune"), resumed=False)
    assert not (tmp_path / "best.yaml").exists()


def test_a_sweep_interrupted_before_its_planned_trials_ran_is_not_summarised(tmp_path):
    """A random or grid searcher plans every trial at the start; interrupted, Tune hands the
    waiting ones back as ended, with nothing reported: the sweep did not finish."""
    from raysteal.distributed.tune import _finish
    from raysteal.errors import RaystealError

    sweep = parse_tune({**BASE, "search_space": SPACE, "tune": {"metric": "agr@k/heldout", "num_samples": 3}})
    ran = _Result("t0", {"attack.lr": 1e-3, "attack.margin": 0.3, "budget": 20}, _reported(0.6, 2, "clone", 2, 0.6, 2))
    waiting = [_Result(f"t{i}", {"attack.lr": 1e-3, "attack.margin": 0.3, "budget": 20}, {}) for i in (1, 2)]
    with pytest.raises(RaystealError, match=r"did not finish \(1 of 3 trials ran, 2 never started\); run the same command again"):
        _finish(sweep, _Grid([ran, *waiting]), tmp_path, str(tmp_path / "tune"), resumed=False)
    assert not (tmp_path / "best.yaml").exists()


def test_peak_window_is_validated_and_names_its_rule(tmp_path):
    from raysteal.distributed.tune import _finish
    from raysteal.experiment.tune_config import rule_smoothed_peak

    with pytest.raises(ConfigError, match="peak_window"):
        parse_tune({**BASE, "search_space": SPACE, "tune": {"metric": "agr@k/heldout", "peak_window": 0}})
    sweep = parse_tune({**BASE, "search_space": SPACE, "tune": {"metric": "agr@k/heldout", "peak_window": 5}})
    assert sweep.tune.peak_window == 5
    grid = _Grid([_Result("t1", {"attack.lr": 1e-3, "attack.margin": 0.5, "budget": 40}, _reported(0.6, 3, "clone", 3, 0.55, 4))])
    outcome = _finish(sweep, grid, tmp_path, str(tmp_path / "tune"), resumed=False)
    assert outcome.rule == rule_smoothed_peak(5) and "5-epoch centred moving average" in outcome.rule
    text = (tmp_path / "best.yaml").read_text()
    assert f"# Rule: {rule_smoothed_peak(5)}." in text
    assert "agr@k/heldout (5-epoch centred average) peaked at 0.6000 (max) at epoch 3 of 4" in text
    assert json.loads((tmp_path / "tune_trials.json").read_text())["rule"] == rule_smoothed_peak(5)


class _Result:
    def __init__(self, trial_id, config, metrics):
        self.config, self.metrics, self.error, self.path = config, {"trial_id": trial_id, **metrics}, None, f"/x/{trial_id}"


class _Grid(list):
    num_errors = 0

    @property
    def num_terminated(self):
        return len(self)


def _reported(peak, epoch, phase, phase_epoch, last, epochs, row=None):
    out = {
        "tune_peak": peak,
        "tune_peak_epoch": epoch,
        "tune_peak_phase": phase,
        "tune_peak_phase_epoch": phase_epoch,
        "tune_last": last,
        "tune_epochs_reported": epochs,
        "epoch": epochs,
        "run_id": f"run-{peak}",
    }
    if row is not None:
        out["row"] = json.dumps(row)
    return out


def test_the_epoch_log_keeps_every_measure_and_survives_a_restart(tmp_path):
    from raysteal.distributed.tune import EpochLog

    path = tmp_path / "tune_curves" / "t1.json"
    log = EpochLog(path)
    for epoch in (1, 2, 3):
        log.record(epoch, {"agr@10/tail": 0.1 * epoch, "agr@10": 0.2 * epoch, "phase": "student", "bad": float("nan")})
    again = EpochLog(path)  # a restored trial reads what it logged before
    assert sorted(again.epochs) == [1, 2, 3] and again.epochs[2] == {"agr@10/tail": 0.2, "agr@10": 0.4}  # text and NaN dropped
    again.record(2, {"agr@10/tail": 0.7})  # training restarted at epoch 2: it and every later epoch are replaced
    assert json.loads(path.read_text()) == {"1": {"agr@10/tail": 0.1, "agr@10": 0.2}, "2": {"agr@10/tail": 0.7}}
    path.write_text("{torn")
    assert EpochLog(path).epochs == {}  # unreadable: starts empty, later epochs still kept


def test_the_best_trial_is_the_best_peak_over_all_epochs_and_best_yaml_trains_to_it(tmp_path):
    """The issue's case: the completed trial ends lower than it peaked, and a trial ASHA stopped
    peaked higher still; the best is the stopped one, at its peak epoch."""
    from raysteal.distributed.tune import _finish
    from raysteal.experiment.config import load_experiment
    from raysteal.experiment.tune_config import RULE_PEAK

    sweep = parse_tune({**BASE, "search_space": SPACE, "tune": {"metric": "agr@k/heldout"}})  # ptq: 4 clone + 4 steal epochs
    grid = _Grid(
        [
            _Result(
                "t-done",
                {"attack.lr": 1e-3, "attack.margin": 0.5, "budget": 40},
                _reported(0.669, 6, "steal", 2, 0.612, 8, row={"agr@k/heldout": 0.610}),
            ),
            _Result("t-cut", {"attack.lr": 2e-3, "attack.margin": 0.7, "budget": 20}, _reported(0.671, 2, "clone", 2, 0.671, 2)),
            _Result("t-low", {"attack.lr": 3e-3, "attack.margin": 0.9, "budget": 20}, _reported(0.637, 2, "clone", 2, 0.637, 2)),
        ]
    )
    outcome = _finish(sweep, grid, tmp_path, str(tmp_path / "tune"), resumed=False)
    assert outcome.rule == RULE_PEAK and outcome.best_trial == "t-cut" and outcome.best_status == "stopped_early"
    assert outcome.best_metric == 0.671 and outcome.best_epoch == 2 and outcome.best_overrides == {"epochs": 2, "finetune_epochs": 0}
    text = (tmp_path / "best.yaml").read_text()
    assert f"# Rule: {RULE_PEAK}." in text and "peaked at 0.6710 (max) at epoch 2 of 2 (stopped early)" in text
    best = load_experiment(tmp_path / "best.yaml")
    assert best.attacks[0]["epochs"] == 2 and best.attacks[0]["finetune_epochs"] == 0 and best.attacks[0]["lr"] == 2e-3
    summary = json.loads((tmp_path / "tune_trials.json").read_text())
    assert summary["rule"] == RULE_PEAK and summary["best"]["trial_id"] == "t-cut"
    done = next(t for t in summary["trials"] if t["trial_id"] == "t-done")
    assert (done["peak_value"], done["peak_epoch"], done["last_value"], done["final_value"], done["epochs_run"]) == (
        0.669,
        6,
        0.612,
        0.610,
        8,
    )
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "tune_trials.parquet")
    assert set(frame.columns) >= {"trial_id", "config", "peak_value", "peak_epoch", "last_value", "epochs_run", "status", "rule"}
    assert len(frame) == 3 and json.loads(frame.set_index("trial_id").loc["t-done", "config"])["attack.lr"] == 1e-3
    # a peak in the stealing phase keeps the clone phase and cuts the stealing phase
    grid[1].metrics["tune_peak"] = 0.5
    outcome = _finish(sweep, grid, tmp_path, str(tmp_path / "tune"), resumed=False)
    assert outcome.best_trial == "t-done" and outcome.best_overrides == {"finetune_epochs": 2}
    assert load_experiment(tmp_path / "best.yaml").attacks[0]["epochs"] == 4


def _epoch_histories(path: Path, metric: str) -> dict[str, list[tuple[int, float]]]:
    """Every trial's per-epoch reports of ``metric`` as Tune recorded them (its ``result.json``;
    the final row's report, which carries ``row``, left out)."""
    out = {}
    for result_file in path.glob("*/result.json"):
        reports = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        out[reports[0]["trial_id"]] = [(int(r["epoch"]), float(r[metric])) for r in reports if "row" not in r]
    return out


@pytest.mark.ray
def test_a_trial_that_peaks_before_its_last_epoch_is_reported_at_its_peak_and_best_yaml_reproduces_it(ray_session, tmp_path, target_cache):
    """mode: min on an agreement: a clone agrees least with the target early on, so every trial
    peaks before its last epoch. Each trial's peak and epoch match its per-epoch history as Tune
    recorded it; best.yaml trains to the peak epoch, and running it gives the peak value."""
    from raysteal.distributed.experiment_runner import run_experiment
    from raysteal.distributed.tune import run_tune
    from raysteal.experiment.config import parse_experiment
    from raysteal.experiment.tune_config import RULE_PEAK
    from raysteal.results import ResultStore

    metric = "agr@k/heldout"
    file = _sweep(
        tmp_path,
        "peak",
        {"attack.lr": {"grid": [1e-2, 3e-3]}},
        {"metric": metric, "mode": "min", "scheduler": {"asha": {"grace_period": 2, "reduction_factor": 2}}, "max_concurrent": 2},
    )
    out = tmp_path / "out"
    outcome = run_tune(load_tune(file), out, cache_dir=target_cache, verbose=0)
    summary = json.loads((out / "tune_trials.json").read_text())
    assert summary["rule"] == RULE_PEAK == outcome.rule and len(summary["trials"]) == 2
    histories = _epoch_histories(out / "tune" / "peak", metric)
    for trial in summary["trials"]:
        history = histories[trial["trial_id"]]
        low = min(v for _, v in history)
        assert trial["peak_value"] == pytest.approx(low)
        assert trial["peak_epoch"] == next(e for e, v in history if v == low)
        assert trial["last_value"] == pytest.approx(history[-1][1]) and trial["epochs_run"] == history[-1][0]
    best = min(summary["trials"], key=lambda t: t["peak_value"])
    assert outcome.best_trial == best["trial_id"] and outcome.best_metric == pytest.approx(best["peak_value"])
    assert best["peak_epoch"] < best["epochs_run"]  # peaked before its last epoch
    assert outcome.best_epoch == best["peak_epoch"]
    rows = ResultStore(out).load().set_index("tune_trial")
    assert rows.loc[best["trial_id"], "tune_peak"] == pytest.approx(best["peak_value"])
    assert rows.loc[best["trial_id"], "tune_peak_epoch"] == best["peak_epoch"]

    raw = yaml.safe_load((out / "best.yaml").read_text())
    attack = raw["attacks"][0]
    if best["peak_phase"] == "clone":
        assert (attack["epochs"], attack["finetune_epochs"]) == (best["peak_phase_epoch"], 0)
    else:
        assert (attack["epochs"], attack["finetune_epochs"]) == (4, best["peak_phase_epoch"])
    assert attack["epochs"] + attack["finetune_epochs"] == best["peak_epoch"]
    # raysteal run OUT/best.yaml (its seed-0 run; the trial's seed) reproduces the peak
    store = run_experiment(parse_experiment({**raw, "seeds": 1}), tmp_path / "rerun", cache_dir=target_cache, progress=False)
    row = store.load().iloc[0]
    assert row[metric] == pytest.approx(best["peak_value"], abs=1e-9)


@pytest.mark.ray
def test_an_optuna_sweep_with_asha_on_a_tiny_case(ray_session, tmp_path, target_cache):
    pytest.importorskip("optuna")
    import pickle

    from raysteal.distributed.tune import run_tune

    space = {"attack.lr": {"loguniform": [1e-4, 1e-2]}, "attack.margin": {"uniform": [0.1, 1.0]}, "budget": {"choice": [20, 40]}}
    file = _sweep(
        tmp_path,
        "optuna",
        space,
        {
            "metric": "agr@k/heldout",
            "searcher": "optuna",
            "num_samples": 4,
            "max_concurrent": 2,
            "seed": 3,
            "scheduler": {"asha": {"grace_period": 2, "reduction_factor": 2}},
        },
    )
    out = tmp_path / "out"
    outcome = run_tune(load_tune(file), out, cache_dir=target_cache, verbose=0)
    assert outcome.trials == 4 and outcome.errored == 0
    summary = json.loads((out / "tune_trials.json").read_text())
    assert summary["searcher"] == "optuna" and len(summary["trials"]) == 4
    for trial in summary["trials"]:
        cfg = trial["config"]
        assert 1e-4 <= cfg["attack.lr"] <= 1e-2 and 0.1 <= cfg["attack.margin"] <= 1.0 and cfg["budget"] in (20, 40)
    assert len({t["config"]["attack.lr"] for t in summary["trials"]}) == 4
    # the study (the searcher's saved state) learnt every trial's peak, the stopped ones' too
    state = pickle.loads(max((out / "tune" / "optuna").glob("searcher-state-*.pkl")).read_bytes())
    told = sorted(t.value for t in state["_ot_study"].trials if t.state.name == "COMPLETE")
    assert told == pytest.approx(sorted(t["peak_value"] for t in summary["trials"]))
    assert (out / "best.yaml").is_file()


@pytest.mark.ray
def test_a_killed_optuna_sweep_resumes_its_study(ray_session, tmp_path, target_cache):
    """``raysteal tune`` with the Optuna searcher SIGKILLed after a trial finished, then run
    again on the same --out: Tuner.restore goes on with the saved study; finished trials are not
    run again, the sweep ends with num_samples trials, at most max_concurrent ran at a time."""
    pytest.importorskip("optuna")
    import pickle

    from raysteal.distributed.tune import run_tune
    from raysteal.results import ResultStore

    samples = 4
    spec = {
        **BASE,
        "experiment": "optuna-resume",
        "attacks": [{"attack": "ptq", "epochs": 10, "finetune_epochs": 10, "batch_size": 64}],  # ~1 s a trial
        "split": {"attacker_fraction": 1.0},
        "search_space": {"attack.lr": {"loguniform": [1e-3, 1e-2]}, "attack.margin": {"uniform": [0.1, 1.0]}},
        "tune": {"metric": "agr@k/heldout", "scheduler": None, "searcher": "optuna", "num_samples": samples, "max_concurrent": 1},
    }
    file = _write(tmp_path / "optuna-resume.yaml", spec)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_AIR_NEW_OUTPUT": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "TUNE_GLOBAL_CHECKPOINT_S": "0.5",
    }
    address = ray_session.get_runtime_context().gcs_address
    cmd = [
        sys.executable,
        "-m",
        "raysteal",
        "tune",
        str(file),
        "--out",
        str(out),
        "--cache-dir",
        str(target_cache),
        "--address",
        address,
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    runs, state_dir = out / "runs", out / "tune" / "optuna-resume"
    try:
        deadline = time.monotonic() + 150
        while not (any(runs.glob("*.parquet")) and _terminated_trials(state_dir) and list(state_dir.glob("searcher-state-*.pkl"))):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = _terminated_trials(state_dir)
    assert 1 <= len(finished) < samples, finished
    before = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.parquet")}

    outcome = run_tune(load_tune(file), out, cache_dir=str(target_cache), verbose=0)
    assert outcome.resumed and outcome.trials == samples and outcome.completed == samples
    frame = ResultStore(out).load()
    assert len(frame) == samples and frame["tune_trial"].nunique() == samples
    after = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.parquet")}
    for row in frame[frame.tune_trial.isin(finished)].itertuples():
        assert after[f"{row.run_id}.parquet"] == before[f"{row.run_id}.parquet"], f"trial {row.tune_trial} ran again"
    # max_concurrent 1 on a 4-CPU runtime: the trials ran one after another
    spans = sorted(zip(frame["started_at"], frame["started_at"] + frame["wall_s"]))
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), spans
    # the resumed study holds every trial, told its peak: the one the killed sweep saved went on
    state = pickle.loads(max(state_dir.glob("searcher-state-*.pkl")).read_bytes())
    study = state["_ot_study"].trials
    assert len(study) == samples and all(t.state.name == "COMPLETE" for t in study)
    assert sorted(t.value for t in study) == pytest.approx(sorted(frame["tune_peak"]))


def test_epoch_overrides_end_training_at_the_reported_phase_epoch():
    from raysteal.experiment.tune_config import epoch_overrides

    assert epoch_overrides({"attack": "ptaq"}, "clone", 30) == {"epochs": 30, "finetune_epochs": 0}
    assert epoch_overrides({"attack": "ptaq"}, "steal", 7) == {"finetune_epochs": 7}
    assert epoch_overrides({"attack": "bahsd"}, "student", 5) == {"epochs": 5}
    assert epoch_overrides({"attack": "seq_ptd"}, "student", 5) == {"data_epochs": 5}
    with pytest.raises(ConfigError, match="not known"):
        epoch_overrides({"attack": "ptq"}, "", 3)


def test_a_row_writer_restored_from_a_sweep_started_by_older_code_writes_stopped_trials_rows(tmp_path):
    """Tuner.restore unpickles the first sitting's callbacks: a sweep started when the writer kept
    its base run as a dict (before the typed Run) must still write a stopped trial's row."""
    import pickle

    from raysteal.distributed.tune import RowWriter
    from raysteal.experiment.run import Run

    sweep = parse_tune({**BASE, "search_space": SPACE})
    writer = RowWriter(str(tmp_path), "tiny-tune", sweep.base_run())
    writer.base_run = dict(sweep.base_run().spec)  # what the older code pickled
    restored = pickle.loads(pickle.dumps(writer))
    assert isinstance(restored.base_run, Run) and restored.base_run.id == sweep.base_run().id
    row = restored.partial_row("t-cut", {"attack.margin": 0.7, "attack.lr": 2e-3, "budget": 20}, {"agr@k": 0.5, "training_iteration": 2})
    assert row["tune_status"] == "stopped_early" and row["hp/margin"] == 0.7 and row["agr@k"] == 0.5


def test_an_optuna_sweep_with_an_errored_trial_resumes_it_under_its_own_id(ray_session, tmp_path, target_cache, monkeypatch):
    """A trial that errored (here: the driver's row writer failing once, as a crash of the
    callback did in a real sweep) is resumed by the next run of the same command under the id the
    searcher suggested: a restarted trial got a new id, and Optuna's KeyError on its first
    result ended the sweep."""
    pytest.importorskip("optuna")
    import pickle

    from raysteal.distributed.tune import RowWriter, run_tune
    from raysteal.errors import RaystealError

    samples = 3
    spec = {
        **BASE,
        "experiment": "optuna-errored",
        "attacks": [{"attack": "ptq", "epochs": 6, "finetune_epochs": 6, "batch_size": 64}],
        "split": {"attacker_fraction": 1.0},
        "search_space": {"attack.lr": {"loguniform": [1e-3, 1e-2]}, "attack.margin": {"uniform": [0.1, 1.0]}},
        "tune": {"metric": "agr@k/heldout", "scheduler": None, "searcher": "optuna", "num_samples": samples, "max_concurrent": 1},
    }
    file = _write(tmp_path / "optuna-errored.yaml", spec)
    out = tmp_path / "out"
    original = RowWriter.on_trial_complete
    failed: list[str] = []

    def fail_once(self, iteration, trials, trial, **info):
        if not failed:
            failed.append(trial.trial_id)
            raise RuntimeError("injected: the row writer failed")
        return original(self, iteration, trials, trial, **info)

    monkeypatch.setattr(RowWriter, "on_trial_complete", fail_once)
    with pytest.raises(RaystealError, match="1 of 3 trial"):
        run_tune(load_tune(file), out, cache_dir=str(target_cache), verbose=0)
    monkeypatch.setattr(RowWriter, "on_trial_complete", original)

    outcome = run_tune(load_tune(file), out, cache_dir=str(target_cache), verbose=0)
    assert outcome.resumed and outcome.trials == samples and outcome.errored == 0
    assert failed[0] in {t["trial_id"] for t in json.loads((out / "tune_trials.json").read_text())["trials"]}
    state = pickle.loads(max((out / "tune" / "optuna-errored").glob("searcher-state-*.pkl")).read_bytes())
    assert len(state["_ot_study"].trials) == samples  # no trial the searcher never suggested
