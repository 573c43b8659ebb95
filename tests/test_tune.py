"""``raysteal tune``: validation before launch, the epoch callback, ASHA stopping, resume after a kill."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def target_cache(tmp_path_factory) -> str:
    """One trained-target cache for the sweeps of this module (they share the target)."""
    return str(tmp_path_factory.mktemp("target-cache"))


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
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_AIR_NEW_OUTPUT": "0", "RAY_USAGE_STATS_ENABLED": "0", "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    address = ray_session.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "raysteal", "tune", str(file), "--out", str(out), "--cache-dir", str(cache), "--address", address, "--quiet"]
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
    "targets": [{"model": "sasrec", "params": {"max_len": 20, "embedding_dim": 16, "num_blocks": 1}, "train": {"epochs": 4, "batch_size": 64, "lr": 3e-3}}],
    "attacks": [{"attack": "bahsd", "budget_queries": 400, "k": 20, "epochs": 4, "batch_size": 64, "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1}}],
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
        "attacks": [{"attack": "dfme", "budget_queries": budget, "k": 20, "epochs": epochs, "batch_size": 16,
                     "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1}}],
        "search_space": {"attack.lr": {"grid": [3e-3]}},
        "tune": {"metric": "agr@10", "scheduler": None, "max_concurrent": 1},
    }
    file = _write(tmp_path / "seq-resume.yaml", spec)
    out = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_AIR_NEW_OUTPUT": "0", "RAY_USAGE_STATS_ENABLED": "0", "TUNE_GLOBAL_CHECKPOINT_S": "0.5"}
    address = ray_session.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "raysteal", "tune", str(file), "--out", str(out), "--cache-dir", str(target_cache), "--address", address, "--quiet"]
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
