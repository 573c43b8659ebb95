"""``benchmarks/gpu_suite.py``: the GPU run's one command runs every step at toy size on the CPU,
stops in seconds naming what is missing, and its carry builder checks what it packs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

SUITE = REPO / "benchmarks" / "gpu_suite.py"
STEPS = ["training", "serving", "table4", "tune", "dfme"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # the suite starts its own Ray runtime (a pytest session's may be up)
    return env


@pytest.mark.ray
@pytest.mark.slow
def test_smoke_runs_every_step_and_writes_ratios(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SUITE), "--smoke", "--out", str(out), "--budget-s", "400"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["smoke"] and list(report["steps"]) == STEPS
    assert {name: s["status"] for name, s in report["steps"].items()} == dict.fromkeys(STEPS, "ok")
    groups = {f["group"] for f in report["figures"]}
    assert {
        "target training (BPR-MF)",
        "black-box serving, MF (BPR), K=50",
        "black-box serving, SASRec, K=10",
        "DFME (Yue et al.'s setting), SASRec teacher",
        "Zhu et al. Table 4, ML-1M, BPR target, one seed",
        "Ray Tune, fractional GPUs",
    } <= groups
    for row in report["figures"]:  # every figure compared with a limit of the same run carries its ratio
        if row["raw_limit"] and isinstance(row["value"], (int, float)):
            assert row["ratio"] == pytest.approx(row["value"] / row["raw_limit"])
    names = [f["figure"] for f in report["figures"]]
    for clients in (1, 2):
        assert any(f"TargetServer actor, {clients} client(s)" in n for n in names)
    assert any(n.startswith("in-process oracle") and n.endswith("bf16") for n in names)
    assert any(n.startswith("bf16 vs fp32 top-") for n in names)
    serving = report["parts"]["serving"]["targets"]
    assert serving["mf"]["bf16_agreement"]["overlap@k"] > 0.5 and serving["sasrec"]["k"] == 10
    assert report["parts"]["table4"]["runs"] == report["parts"]["table4"]["runs_planned"] == 7  # every attack of the file
    tune = report["parts"]["tune"]
    assert tune["completed"] == tune["trials"] == 2 and tune["max_concurrent_seen"] >= 1
    assert report["parts"]["dfme"]["finished"] and report["parts"]["dfme"]["epochs"]
    md = (out / "gpu_suite.md").read_text()
    assert "smoke test" in md and "| figure | value |" in md and "## Ray Tune, fractional GPUs" in md
    assert "Ray" in (out / "gpu_suite.log").read_text()


def test_a_missing_carry_stops_in_seconds_naming_it(tmp_path):
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(SUITE), "--carry", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "MISSING: carry folder" in done.stdout and "nothing measured" in done.stdout
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "out" / "gpu_suite.json").exists()
    done = subprocess.run(
        [sys.executable, str(SUITE), "--carry", str(tmp_path), "--out", str(tmp_path / "out"), "--set", "clientz=[1]"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "--set 'clientz=[1]': expected FIELD=JSON" in done.stderr


def test_carry_builder_packs_checks_and_refuses(tmp_path, benchmarks_on_path):
    import gzip

    import gpu_carry

    from raysteal.data import load_dataset
    from raysteal.data.synthetic import generate
    from raysteal.training import save_checkpoint, seeded_model

    data = tmp_path / "data"
    (data / "ml-1m").mkdir(parents=True)
    table = generate(num_users=40, num_items=30, min_len=5, max_len=12, seed=0)
    with gzip.open(data / "ml-1m" / "ml-1m.seq.tsv.gz", "wt") as fh:
        fh.write("user_id\tmovie_id\n")
        fh.writelines(f"{u}\t{i}\n" for u, i in zip(table["user"].to_numpy(), table["item"].to_numpy()))
    log = load_dataset("ml-1m", data_dir=data, preprocess="paper")
    teacher = save_checkpoint(
        tmp_path / "t.pt", seeded_model({"model": "sasrec", "embedding_dim": 4, "max_len": 8}, log.num_users, log.num_items, 0)
    )
    carry = tmp_path / "carry"
    manifest = gpu_carry.build_carry(carry, teacher, data_dir=str(data), wheels=False)
    assert manifest["dataset"]["file"] == "data/ml-1m/ml-1m.seq.tsv.gz" and manifest["teacher"]["model"] == "sasrec"
    assert manifest["teacher"]["num_items"] == log.num_items and manifest["travel_bytes"] < gpu_carry.TRAVEL_LIMIT
    assert gpu_carry.check_carry(carry, need_wheels=False)[1] == []
    problems = gpu_carry.check_carry(carry, need_wheels=True)[1]
    assert any("ray-2.60.0" in p for p in problems) and any("pydantic" in p for p in problems)

    wrong = save_checkpoint(
        tmp_path / "w.pt", seeded_model({"model": "sasrec", "embedding_dim": 4, "max_len": 8}, log.num_users, log.num_items + 1, 0)
    )
    with pytest.raises(SystemExit, match="trained on another log"):
        gpu_carry.build_carry(tmp_path / "c2", wrong, data_dir=str(data), wheels=False)
    mf = save_checkpoint(tmp_path / "mf.pt", seeded_model({"model": "bpr", "embedding_dim": 4}, log.num_users, log.num_items, 0))
    with pytest.raises(SystemExit, match="needs a sequential teacher"):
        gpu_carry.build_carry(tmp_path / "c3", mf, data_dir=str(data), wheels=False)
    with pytest.raises(SystemExit, match="too large to travel"):
        gpu_carry.build_carry(tmp_path / "c4", teacher, data_dir=str(data), wheels=False, limit=1000)

    (carry / manifest["teacher"]["file"]).write_bytes(b"cut short")
    assert any("teacher file" in p and "bytes" in p for p in gpu_carry.check_carry(carry, need_wheels=False)[1])
