"""An experiment on the user's own interaction file (DESIGN.md: load the original formats from a
user's path): ``datasets: [{name: LABEL, path: FILE, format: ..., columns: {...}}]``."""

from __future__ import annotations

import numpy as np
import pytest

from raysteal.data import load_dataset
from raysteal.errors import ConfigError
from raysteal.experiment.config import parse_experiment
from raysteal.experiment.context import prepare_dataset
from raysteal.experiment.run import expand_runs


def _csv(tmp_path, log):
    users = np.repeat(np.arange(log.num_users), np.diff(log.indptr))
    lines = ["who;what;when"] + [f"u{u};{i};{t}" for t, (u, i) in enumerate(zip(users, log.items))]
    path = tmp_path / "clicks.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _experiment(dataset: dict) -> dict:
    return {
        "experiment": "mine",
        "seeds": 1,
        "datasets": [dataset],
        "targets": [{"model": "bpr"}],
        "attacks": [{"attack": "popularity"}],
        "k": 10,
    }


def test_an_experiment_runs_on_a_csv_of_the_users(tmp_path):
    log = load_dataset("synthetic", num_users=150, num_items=60, max_len=20, seed=3)
    path = _csv(tmp_path, log)
    entry = {"name": "my-clicks", "path": str(path), "columns": {"user": "who", "item": "what", "timestamp": "when", "delimiter": ";"}}
    config = parse_experiment(_experiment(entry))
    (run,) = expand_runs(config)
    ctx = prepare_dataset(config.datasets[0], config.split)
    total = ctx.target.num_interactions + ctx.auxiliary.num_interactions
    assert ctx.label == "my-clicks" and total == log.num_interactions
    assert ctx.target.num_users + ctx.auxiliary.num_users == log.num_users
    kcored = prepare_dataset(parse_experiment(_experiment({**entry, "kcore": 8})).datasets[0], config.split)
    assert kcored.target.num_interactions + kcored.auxiliary.num_interactions < total  # kcore applies to files too
    # a file's settings enter the run id; a registered dataset's id is the one it always had
    assert run.id != expand_runs(parse_experiment(_experiment({"name": "synthetic"})))[0].id


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"path": "missing.csv"}, "datasets.0: .*missing.csv: file not found"),
        ({"format": "excel"}, "unknown file format 'excel'"),
        ({"columns": {"user": "who", "colour": "red"}}, "does not take those options"),
        ({"options": {"seed": 1}}, "options are a generated dataset's"),
        ({"preprocess": "kcore-ish"}, "unknown preprocess step"),
        ({"columns": {"user": "who", "format": "table"}}, "columns: format are the entry's own settings"),
        ({"columns": {"user": "who", "item": "what", "delimiter": ""}}, "delimiter: must be a non-empty string"),
        ({"columns": {"user": "what", "item": "what", "delimiter": ";"}}, "user and item both name the column 'what'"),
        ({"path": "."}, "is a directory"),
    ],
)
def test_a_bad_file_entry_is_refused_before_any_work(tmp_path, patch, message):
    path = _csv(tmp_path, load_dataset("synthetic", num_users=20, num_items=30, max_len=5, seed=0))
    entry = {"name": "mine", "path": str(path), "columns": {"user": "who", "item": "what", "delimiter": ";"}, **patch}
    with pytest.raises(ConfigError, match=message):
        parse_experiment(_experiment(entry))


def test_file_settings_without_a_file_are_refused():
    with pytest.raises(ConfigError, match="set path too"):
        parse_experiment(_experiment({"name": "ml-1m", "format": "table"}))
    with pytest.raises(ConfigError, match="or give the file as path"):
        parse_experiment(_experiment({"name": "my-own"}))
