"""``raysteal run`` checks the experiment against its data once the file is read (issue 23: holes
3, 6, 7, 8, 9): bad data files, a ``k`` longer than the catalogue and a dataset too small for the
protocol are refused in one line before Ray starts, with nothing written; ``--out`` under a file
is one line; Ctrl-C says what finished and how to resume."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from raysteal.errors import ConfigError, DataFileError
from raysteal.experiment.config import parse_experiment
from raysteal.experiment.run import expand_runs

SMALL = {
    "experiment": "small",
    "seeds": 2,
    "datasets": [{"name": "synthetic", "options": {"num_users": 80, "num_items": 40, "max_len": 12, "seed": 1}}],
    "targets": [{"model": "bpr", "train": {"epochs": 1}}],
    "attacks": [{"attack": "popularity"}, {"attack": "ptd", "epochs": 1}],
    "k": 10,
}


def check_experiment_data(*args, **kwargs):
    from raysteal.experiment.preflight import check_experiment_data as check

    return check(*args, **kwargs)


def _csv(path: Path, users: int, items: int = 30, per_user: int = 8) -> Path:
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for user in range(users):
        lines += [f"{user},{item},{len(lines)}" for item in rng.choice(items, size=per_user, replace=False)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def no_runner(monkeypatch):
    """``run_experiment`` replaced by one that must not be reached."""
    import raysteal.distributed.experiment_runner as runner_module

    def never(*_, **__):
        raise AssertionError("the runner started: the experiment should have been refused before it")

    monkeypatch.setattr(runner_module, "run_experiment", never)


def _run(tmp_path: Path, spec: dict, *options: str):
    from raysteal.cli import app

    file = tmp_path / "exp.yaml"
    file.write_text(yaml.safe_dump(spec))
    return file, CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "out"), "--quiet", *options])


# ------------------------------------------------------------------ hole 3: k longer than the catalogue
@pytest.mark.parametrize(
    "patch, key",
    [
        ({"k": 100}, r"attack 'popularity': k=100 is larger than the catalogue \(39 items after preprocessing\)"),
        ({"grid": {"k": [10, 60]}}, r"attack 'popularity': grid\.k=60 is larger than the catalogue"),
        ({"attacks": [{"attack": "popularity"}, {"attack": "ptd", "epochs": 1, "k": 45}]}, r"attack 'ptd': attacks\.1\.k=45 is larger"),
    ],
)
def test_a_k_longer_than_the_catalogue_is_refused_when_the_file_is_read(tmp_path, no_runner, patch, key):
    file, result = _run(tmp_path, {**SMALL, **patch})
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert message.startswith(f"{file}: datasets.0 ('synthetic'), attack ") and "\n" not in message
    assert re.search(key, message), message
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_sequential_attacks_own_default_list_length_is_named(tmp_path):
    spec = {
        **SMALL,
        "targets": [{"model": "sasrec", "params": {"max_len": 10}}],
        "attacks": [{"attack": "dfme"}],
        "split": {"aux_fraction": 0.0},
    }
    with pytest.raises(ConfigError, match=r"attack 'dfme': attacks\.0\.k=100 \(its default\) is larger than the catalogue \(\d+ items"):
        check_experiment_data(parse_experiment(spec), "exp.yaml")


# ------------------------------------------------------------------ hole 7: bad data files
def _bad_files(tmp_path: Path) -> dict[str, Path]:
    empty, header, parquet = tmp_path / "empty.csv", tmp_path / "header.csv", tmp_path / "corrupt.parquet"
    empty.write_text("")
    header.write_text("user_id,item_id,timestamp\n")
    pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4]}).to_parquet(parquet)
    parquet.write_bytes(parquet.read_bytes()[:40])  # cut short: the footer is gone
    return {"empty": empty, "header": header, "parquet": parquet}


@pytest.mark.parametrize(
    "kind, problem",
    [
        ("empty", "the file is empty"),
        ("header", "no data rows"),
        ("parquet", "not a readable Parquet file"),
    ],
)
def test_a_bad_data_file_is_refused_before_ray_with_nothing_written(tmp_path, no_runner, kind, problem):
    path = _bad_files(tmp_path)[kind]
    file, result = _run(tmp_path, {**SMALL, "datasets": [{"name": "mine", "path": str(path)}]})
    assert isinstance(result.exception, DataFileError), result.output
    message = str(result.exception)
    assert message.startswith(f"{file}: datasets.0 ('mine'): {path}") and problem in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_finished_runs_need_no_data(tmp_path):
    """Every run of the dataset has its row: its file is not read (a resumed, finished experiment exports)."""
    path = _bad_files(tmp_path)["empty"]
    config = parse_experiment({**SMALL, "datasets": [{"name": "mine", "path": str(path)}]})
    check_experiment_data(config, "exp.yaml", wanted=lambda run: False)
    with pytest.raises(DataFileError, match="the file is empty"):
        check_experiment_data(config, "exp.yaml", wanted=lambda run: run.seed == 1)


# ------------------------------------------------------------------ hole 9: too few users
def test_a_dataset_too_small_for_the_protocol_is_refused_naming_its_groups(tmp_path, no_runner):
    path = _csv(tmp_path / "seven.csv", users=7)
    file, result = _run(tmp_path, {**SMALL, "datasets": [{"name": "seven", "path": str(path)}]})
    assert isinstance(result.exception, ConfigError), result.output
    message = str(result.exception)
    assert message.startswith(f"{file}: datasets.0 ('seven'), attack 'popularity': too small for the protocol (7 users")
    assert "target 3, auxiliary 4, attacker 1, evaluation 0 (held-out attacker users; 1 queried)" in message
    assert "agr@k/heldout would be NaN" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_a_sequential_target_with_no_user_to_score_is_refused(tmp_path):
    path = _csv(tmp_path / "short.csv", users=40, per_user=2)  # nobody holds an item out
    spec = {
        **SMALL,
        "datasets": [{"name": "short", "path": str(path)}],
        "split": {"aux_fraction": 0.0},
        "targets": [{"model": "sasrec", "params": {"max_len": 10}}],
        "attacks": [{"attack": "dfme", "k": 20}],
    }
    with pytest.raises(ConfigError, match=r"too small for the protocol \(40 users.*target 40, auxiliary 0, attacker 0, evaluation 0"):
        check_experiment_data(parse_experiment(spec), "exp.yaml")


def test_the_attacker_population_is_refused_on_a_collaborative_target():
    for split in ({"attacker_population": 0.5}, {"scored_users": "report"}):
        spec = {**SMALL, "split": split}
        with pytest.raises(ConfigError, match="apply to sequential targets only; target 'bpr' is collaborative"):
            check_experiment_data(parse_experiment(spec), "exp.yaml")


def test_a_dataset_large_enough_passes(tmp_path):
    config = parse_experiment(SMALL)
    check_experiment_data(config, "exp.yaml")  # 80 users: 40 target, 4 known (3 queried, 1 held out)
    assert len(expand_runs(config)) == 4


# ------------------------------------------------------------------ hole 8: --out under a file
def test_an_out_directory_under_a_file_is_one_line(tmp_path, no_runner):
    from raysteal.cli import app

    (tmp_path / "taken").write_text("a file")
    file = tmp_path / "exp.yaml"
    file.write_text(yaml.safe_dump(SMALL))
    for command in (["run", str(file)], ["report", str(tmp_path)]):
        result = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "taken" / "sub")])
        assert isinstance(result.exception, ConfigError), result.output
        assert str(result.exception) == f"--out {tmp_path / 'taken' / 'sub'}: {tmp_path / 'taken'} is a file, not a directory"


# ------------------------------------------------------------------ hole 6: Ctrl-C
def test_ctrl_c_says_what_finished_and_how_to_resume(tmp_path, monkeypatch):
    import raysteal.distributed.experiment_runner as runner_module
    from raysteal.results import ResultStore

    def one_row_then_ctrl_c(config, out_dir, **_):
        first = expand_runs(config)[0]
        ResultStore(out_dir).write_row(first.id, {"experiment": "small", "agr@k": 0.5})
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_module, "run_experiment", one_row_then_ctrl_c)
    file, result = _run(tmp_path, SMALL, "--only-seeds", "1")
    assert result.exit_code == 130
    (line,) = result.stderr.strip().splitlines()
    out = tmp_path / "out"
    assert line == (
        f"interrupted: 1 run(s) finished in this sitting, 1 of 2 in all (their rows are kept in {out / 'runs'}; "
        f"unfinished runs start again); resume with: raysteal run {file} --out {out} --only-seeds 1 --quiet"
    )
