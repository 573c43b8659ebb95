"""``raysteal run`` killed in the middle of a DFME run (SIGKILL: no cleanup, no row) and run again:
the run goes on from its last finished epoch on the answers it already paid for. And SIGTERM, which
stops ``raysteal run`` and ``raysteal tune`` the way Ctrl-C does.

The killed invocation is a subprocess with its own local Ray runtime (own temp dir); teardown
kills exactly the processes it left, never a machine-wide ``ray stop``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from raysteal.experiment.config import parse_experiment
from raysteal.oracle.ledger import BudgetLedger

BUDGET = 1200
EXPERIMENT = {
    "experiment": "resume-mid-run",
    "seeds": 1,
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
            "attack": "dfme",
            "budget_queries": BUDGET,
            "k": 20,
            "epochs": 150,
            "batch_size": 16,
            "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1},
        }
    ],
    "split": {"aux_fraction": 0.0},
    "k": 10,
}


def _kill_everything_under(root: Path) -> None:
    """SIGKILL every process whose command line names ``root`` (the killed run's Ray runtime)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if str(root).encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def _stopped_raysteal(args: list[str], ready, stop, what: str) -> tuple[int, str]:
    """Run ``python -m raysteal ARGS`` in its own session with its own local Ray runtime (own temp
    dir), wait until ``ready()`` (at most 300 s), ``stop(proc)`` it, and return its exit status and
    output. Teardown kills exactly the processes it left, never a machine-wide ``ray stop``."""
    ray_tmp = Path(tempfile.mkdtemp(prefix=f"rres-{uuid.uuid4().hex[:4]}-", dir="/tmp"))  # short: Ray socket paths
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": "", "RAYSTEAL_RAY_TMP": str(ray_tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "raysteal", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while not ready():
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, what
            time.sleep(0.05)
        stop(proc)
        output = proc.communicate(timeout=180)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_everything_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return proc.returncode, output


def _kill_group(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)


def _terminate_driver(proc) -> None:
    proc.send_signal(signal.SIGTERM)  # the driver only, as `timeout -s TERM` does


@pytest.mark.ray
def test_a_killed_experiment_resumes_its_run_mid_training(ray_session, tmp_path):
    from raysteal.distributed.experiment_runner import run_experiment

    spec, out, cache = tmp_path / "resume.yaml", tmp_path / "out", tmp_path / "cache"
    spec.write_text(yaml.safe_dump(EXPERIMENT))
    args = ["run", str(spec), "--out", str(out), "--cache-dir", str(cache), "--num-cpus", "2", "--quiet"]
    # one epoch saved: the run is mid-training
    _stopped_raysteal(args, lambda: list((out / "partial").glob("*/student.state")), _kill_group, "no student state appeared")
    assert not list((out / "runs").glob("*.parquet"))  # killed before its row: nothing finished

    store = run_experiment(parse_experiment(EXPERIMENT), out, cache_dir=str(cache), progress=False)
    row = store.load().iloc[0]
    assert row["queries"] == BUDGET and row["info/data_reused"]  # trained on the killed attempt's answers
    assert 1 <= row["info/resumed_epoch"] < 150 and row["info/epochs_run"] == 150
    accounts = {}
    for journal in (out / "ledgers").glob("*/ledger.jsonl"):
        ledger = BudgetLedger(journal)
        accounts.update(ledger.snapshot())
        ledger.close()
    rid = row["run_id"]
    assert accounts[rid]["spent"] == BUDGET  # the killed attempt paid for the answers ...
    assert accounts[f"{rid}@1"]["spent"] == 0  # ... and the retry, on its own account, spent nothing
    assert not (out / "partial" / row["run_id"]).exists()  # the finished run's scratch is gone


def test_sigterm_stops_raysteal_run_politely_and_writes_the_finished_rows(tmp_path):
    # what `timeout`, Slurm or Kubernetes send before a kill: the sitting ends like Ctrl-C (exit
    # 130, the resume line), and results.parquet holds the rows finished so far
    import pandas as pd

    experiment = {**EXPERIMENT, "experiment": "terminated", "attacks": [{"attack": "popularity"}, *EXPERIMENT["attacks"]]}
    spec, out, cache = tmp_path / "term.yaml", tmp_path / "out", tmp_path / "cache"
    spec.write_text(yaml.safe_dump(experiment))
    args = ["run", str(spec), "--out", str(out), "--cache-dir", str(cache), "--num-cpus", "1", "--quiet"]
    # the floor's row written, DFME mid-training
    status, output = _stopped_raysteal(
        args, lambda: list((out / "partial").glob("*/student.state")), _terminate_driver, "DFME never reached its first epoch"
    )
    assert status == 130, output
    assert "interrupted: 1 run(s) finished in this sitting, 1 of 2 in all" in output and "resume with: raysteal run" in output
    assert list(pd.read_parquet(out / "results.parquet")["attack"]) == ["popularity"]
    assert list((out / "partial").glob("*/student.state"))  # the unfinished run keeps its epochs


def test_sigterm_ends_a_tune_sweep_as_ctrl_c_does(tmp_path):
    # Ray Tune stops gracefully on SIGINT (its last experiment checkpoint); SIGTERM is passed on as
    # SIGINT, so the sweep ends unfinished and says the same command resumes it
    sweep = {
        "experiment": "terminated-sweep",
        "datasets": [{"name": "synthetic", "options": {"num_users": 300, "num_items": 200, "max_len": 40, "seed": 1}}],
        "targets": [{"model": "bpr", "train": {"epochs": 4, "batch_size": 512}}],
        "attacks": [{"attack": "ptq", "epochs": 200, "finetune_epochs": 4, "batch_size": 64}],
        "split": {"attacker_fraction": 0.3},
        "k": 20,
        "search_space": {"attack.lr": {"loguniform": [1e-4, 1e-2]}},
        "tune": {"metric": "agr@k/heldout", "num_samples": 4, "scheduler": "fifo", "searcher": "random"},
    }
    spec, out, cache = tmp_path / "sweep.yaml", tmp_path / "out", tmp_path / "cache"
    spec.write_text(yaml.safe_dump(sweep))
    args = ["tune", str(spec), "--out", str(out), "--cache-dir", str(cache), "--num-cpus", "1", "--quiet"]
    started = []

    def trial_under_way() -> bool:  # the target trained, then two seconds into the first trial
        if not started and list(cache.rglob("*.pt")):
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 2

    status, output = _stopped_raysteal(args, trial_under_way, _terminate_driver, "no trial started")
    assert status not in (0, -signal.SIGTERM, -signal.SIGABRT), output
    assert "did not finish" in output and "run the same command again to resume it" in output, output[-3000:]
    assert not (out / "best.yaml").exists()
    # the trial in flight was interrupted, not finished nor stopped by the scheduler: it has no row
    assert not list((out / "runs").glob("*.parquet"))
