"""``raysteal simulate``: many concurrent attackers, exact budgets, rate limits, the summary contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from raysteal.errors import ConfigError
from raysteal.experiment.simulate_config import parse_simulation

SIM = {
    "experiment": "sim-test",
    "datasets": [{"name": "synthetic", "options": {"num_users": 600, "num_items": 200, "max_len": 40, "seed": 2}}],
    "targets": [{"model": "bpr", "train": {"epochs": 5, "batch_size": 512}}],
    "attacks": [{"attack": "qsd", "finetune_epochs": 1, "batch_size": 512}, {"attack": "popularity"}],
    "defenses": [[], [{"type": "rate_limit", "rate": 40, "burst": 4}]],
    "split": {"attacker_fraction": 0.05},  # ~15 known users, ~12 queryable
    "k": 10,
    "simulation": {"attackers": 64, "budgets": [1, 3, 1000], "cpus_per_attacker": 1, "request_size": 2},
}


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"simulation": None}, r"simulation: a simulation file needs"),
        ({"simulation": {**SIM["simulation"], "attackers": 0}}, r"simulation\.attackers"),
        ({"simulation": {**SIM["simulation"], "budgets": [5, -1]}}, r"simulation\.budgets"),
        ({"simulation": {**SIM["simulation"], "budgets": [0, 3]}}, r"simulation\.budgets: a budget of 0 leaves 'qsd' no query"),
        ({"simulation": {**SIM["simulation"], "request_size": 8}}, r"simulation\.request_size: 8 exceeds the burst \(4\)"),
        ({"simulation": {**SIM["simulation"], "cpus": 1}}, r"simulation\.cpus"),
        ({"seeds": 3}, r"seeds: does not apply"),
        ({"only_seeds": [0]}, r"only_seeds: does not apply"),
        ({"simulation": {**SIM["simulation"], "budgets": [5, True]}}, r"simulation\.budgets: must hold numbers, got true"),
        ({"targets": SIM["targets"] + [{"model": "lmf"}]}, r"exactly one dataset and one target"),
        ({"attacks": [{"attack": "qsd", "finetune_epochz": 1}]}, r"finetune_epochz"),
        (
            {"simulation": {**SIM["simulation"], "benign": {"accounts": 10, "rate": -1}}},
            r"simulation\.benign\.rate: Input should be greater than 0",
        ),
        ({"simulation": {**SIM["simulation"], "benign": {"accounts": 0}}}, r"simulation\.benign\.accounts"),
        ({"simulation": {**SIM["simulation"], "benign": {"accounts": 10, "queries": 0}}}, r"simulation\.benign\.queries"),
        ({"simulation": {**SIM["simulation"], "benign": {"accounts": 10, "source": "everyone"}}}, r"simulation\.benign\.source"),
        ({"simulation": {**SIM["simulation"], "benign": {"accounts": 10, "rate": True}}}, r"simulation\.benign: rate: must be a number"),
        ({"simulation": {**SIM["simulation"], "detection": {"fpr": 0.01}}}, r"simulation\.detection: needs simulation\.benign"),
        ({"simulation": {**SIM["simulation"], "benign": {"accounts": 10}, "detection": {"fpr": 1.5}}}, r"simulation\.detection\.fpr"),
    ],
)
def test_bad_simulation_files_fail_naming_the_key(patch, key):
    with pytest.raises(ConfigError, match=key):
        parse_simulation({**SIM, **patch})


def test_attackers_get_their_own_seed_budget_attack_and_server():
    sim = parse_simulation(SIM)
    runs = sim.attacker_runs()
    assert len(runs) == 64 and len({r.seed for r in runs}) == 64
    assert [r.budget for r in runs[:4]] == [1, 3, 1000, 1]
    assert [r.attack_name for r in runs[:3]] == ["qsd", "popularity", "qsd"]
    assert [r.simulation.server for r in runs[:4]] == [0, 0, 1, 1]  # every attack meets every server
    assert runs[2].defense_settings == SIM["defenses"][1] and runs[0].defense_settings == []


def test_patient_client_waits_out_a_rate_limit_and_splits_requests():
    from raysteal.distributed.simulate import PatientClient
    from raysteal.oracle import TargetSpec, in_process_oracle
    from tests.oracle_fixtures import bpr_target, random_log

    log = random_log()
    oracle = in_process_oracle(
        TargetSpec.from_training_log(bpr_target(log), log, defenses=[{"type": "rate_limit", "rate": 200, "burst": 4}])
    )
    client = PatientClient(oracle.register_attacker("a", budget=12), request_size=4)
    lists = client.query(np.arange(12), 5)
    assert lists.shape == (12, 5) and client.requests == 3 and client.spent == 12
    assert client.rate_limited >= 1 and client.waited_s > 0  # 4 tokens a burst: the later requests waited
    plain = in_process_oracle(TargetSpec.from_training_log(bpr_target(log), log)).register_attacker("b")
    assert np.array_equal(lists, plain.query(np.arange(12), 5))  # split requests, same answers
    log_frame = oracle.query_log().to_pandas()
    assert (log_frame[log_frame.attacker == "a"].granted.sum()) == 3


@pytest.mark.ray
def test_64_concurrent_attackers_spend_exactly_their_budgets(ray_session, tmp_path):
    from typer.testing import CliRunner

    from raysteal.cli import app
    from raysteal.results import ResultStore

    file = tmp_path / "sim.yaml"
    file.write_text(yaml.safe_dump(SIM))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["simulate", str(file), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert {"attackers", "queries", "qps", "latency_ms", "budget_overspend"} <= set(summary)
    assert set(summary["latency_ms"]) == {"p50", "p99"}
    assert summary["attackers"] == 64 and summary["completed"] == 64 and summary["failed"] == 0
    assert summary["budget_overspend"] == 0

    rows = ResultStore(out).load()
    assert len(rows) == 64 and rows["run_id"].nunique() == 64 and sorted(rows["attacker"]) == list(range(64))
    qsd = rows[rows.attack == "qsd"]
    # exact budgets: every querying attacker spent min(budget, users it may query), no more, no less
    assert (qsd["queries"] == np.minimum(qsd["budget"], qsd["queried_users"])).all()
    assert (rows[rows.attack == "popularity"]["queries"] == 0).all()
    assert summary["queries"] == int(rows["queries"].sum())

    logs = ResultStore(out).load_query_logs()
    assert logs["server"].nunique() == 2
    spent = logs[logs.granted].groupby("attacker")["count"].sum()
    for row in qsd[qsd.queries > 0].itertuples():  # the server's own log agrees with the ledger
        assert spent[row.run_id] == row.queries
    limited = qsd[qsd.server == 1]
    assert (limited["requests"] == np.ceil(limited["queries"] / 2)).all()  # request_size 2
    assert summary["refused"].get("RateLimitExceeded", 0) == int(rows["rate_limited"].sum()) > 0
    # they really ran at once: some attackers overlapped in time
    spans = rows[["started_at", "finished_at"]].to_numpy()
    overlap = max(int(((spans[:, 0] <= t) & (spans[:, 1] > t)).sum()) for t in spans[:, 0])
    assert overlap >= 2
    assert "queries/s" in result.output and "budget overspend 0" in result.output


def test_an_attacker_shape_the_local_runtime_cannot_hold_is_refused_not_waited_on(monkeypatch, ray_session):
    import raysteal.distributed.runtime as runtime
    from raysteal.errors import ConfigError

    monkeypatch.setitem(runtime._LOCAL, "started", True)  # as if raysteal had started this runtime
    with pytest.raises(ConfigError, match=r"an attacker asks for 64 CPU\(s\) each, but this local Ray runtime has 4; raise --num-cpus"):
        runtime.check_fits(64, 0, "an attacker")
    runtime.check_fits(1, 0, "an attacker")
    monkeypatch.setitem(runtime._LOCAL, "started", False)  # a joined cluster may autoscale: not checked
    runtime.check_fits(64, 0, "an attacker")


def test_a_bad_attackers_override_names_the_option_not_the_file():
    for bad in (-3, 0):
        with pytest.raises(ConfigError, match=r"^--attackers must be an integer >= 1"):
            parse_simulation(SIM, source="sim.yaml", attackers=bad)


def test_repeated_attacks_and_defenses_weight_a_simulation():
    """Attackers are dealt out round-robin, so a repeat is meant (2:1 qsd), unlike in a grid."""
    sim = parse_simulation({**SIM, "attacks": [SIM["attacks"][0], SIM["attacks"][0], SIM["attacks"][1]], "defenses": [[], []]})
    runs = sim.attacker_runs()
    assert [r.attack_name for r in runs[:6]] == ["qsd", "qsd", "popularity"] * 2
    assert {r.simulation.server for r in runs} == {0, 1}  # two servers, both undefended


SEQ_SIM = {
    "experiment": "sim-detect",
    "datasets": [{"name": "synthetic", "options": {"num_users": 300, "num_items": 120, "max_len": 30, "seed": 3}}],
    "targets": [
        {"model": "sasrec", "params": {"max_len": 20, "embedding_dim": 16, "num_blocks": 1}, "train": {"epochs": 3, "batch_size": 64}}
    ],
    "attacks": [
        {
            "attack": "dfme",
            "k": 20,
            "max_len": 10,
            "epochs": 1,
            "batch_size": 64,
            "query_batch": 20,
            "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1},
        },
        {
            "attack": "seq_ptq",
            "k": 20,
            "epochs": 1,
            "data_epochs": 1,
            "batch_size": 64,
            "budget_sequences": 20,
            "student": {"model": "sasrec", "embedding_dim": 16, "num_blocks": 1},
        },
    ],
    "split": {"aux_fraction": 0.0, "attacker_fraction": 0.2},
    "k": 10,
    "simulation": {
        "attackers": 4,
        "budgets": [100, 100, 200, 200],
        "cpus_per_attacker": 0.5,
        "request_size": 20,
        "benign": {"accounts": 24, "queries": 5, "rate": 20.0, "source": "target"},
        "detection": {"fpr": 0.1},
    },
}


@pytest.mark.ray
def test_benign_traffic_and_detection_beside_the_attackers(ray_session, tmp_path):
    import pandas as pd

    from raysteal.distributed.simulate import run_simulation
    from raysteal.results import ResultStore

    out = tmp_path / "out"
    summary = run_simulation(parse_simulation(SEQ_SIM), out, cache_dir=str(tmp_path / "cache"), progress=False)
    assert summary["budget_overspend"] == 0 and summary["failed"] == 0
    labels = pd.read_parquet(out / "accounts.parquet")
    assert (labels.role == "benign").sum() == 24 and (labels.role == "attacker").sum() == 4
    sent = labels[labels.role == "benign"].set_index("account")["budget"]  # min(5, its history's length)
    assert sent.between(2, 5).all() and (sent == 5).sum() > 12
    assert summary["benign"]["accounts"] == 24 and summary["benign"]["requests"] == sent.sum() and summary["benign"]["failed"] == 0
    logs = ResultStore(out).load_query_logs()
    benign = logs[logs.attacker.str.startswith("benign-") & logs.granted]
    assert benign.groupby("attacker")["count"].sum().sort_index().equals(sent.sort_index().rename("count"))
    # each benign request is a real history's prefix, one item longer than the one before; the
    # traffic is open-loop, so on a loaded machine two of an account's requests can be in flight
    # at once and be served out of order: the lengths, not their order, are checked
    first = benign[benign.attacker == benign.attacker.min()]
    lengths = sorted(int(row[0]) for row in first["lengths"])
    assert (np.diff(lengths) == 1).all() or max(lengths) == 20  # (the server's window caps at max_len)
    scores = pd.read_parquet(out / "detection" / "scores.parquet")
    assert (scores.role == "benign").sum() == 12  # the other 12 calibrated the detector
    dfme = scores[scores.attack == "dfme"]
    assert len(dfme) == 2 and (dfme.autoregressive > 0.8).all()
    results = pd.read_parquet(out / "detection" / "results.parquet")
    budgets = results.groupby("attack")["budget"].apply(set).to_dict()
    assert budgets == {"dfme": {100, 200}, "seq_ptq": {20}}  # seq_ptq's own budget_sequences caps its account's
    assert results.auc.between(0, 1).all() and (results.set_index("attack").loc["dfme", "auc"] == 1.0).all()
    assert "| dfme | 100 |" in (out / "detection" / "report.md").read_text()
    assert [g["attack"] for g in summary["detection"]] == list(results.attack)


def test_accounts_are_labelled_with_attack_and_planned_queries():
    from raysteal.distributed.benign import BenignAccount
    from raysteal.distributed.simulate import account_labels

    runs = parse_simulation(SEQ_SIM).attacker_runs()
    benign = [BenignAccount("benign-0", 7, [np.array([1])] * 3), BenignAccount("benign-1", 9, [np.array([2])] * 2)]
    labels = account_labels(runs, benign, servers=1)
    assert labels.role.tolist() == ["attacker"] * 4 + ["benign"] * 2
    assert labels.attack.tolist() == ["dfme", "seq_ptq", "dfme", "seq_ptq", "benign", "benign"]
    assert labels.budget.tolist() == [100, 20, 200, 20, 3, 2]  # seq_ptq: its 20 sequences, not its account's 100
    assert labels.user.tolist()[-2:] == [7, 9]
