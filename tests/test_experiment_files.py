"""Every experiment file the project ships parses with its own loader (a typo in one is caught
here, not an hour into a run), and every grid of attacks reports the popularity floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysteal.experiment.config import load_experiment
from raysteal.experiment.run import expand_runs
from raysteal.experiment.simulate_config import load_simulation
from raysteal.experiment.tune_config import load_tune

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
FILES = sorted(EXPERIMENTS.rglob("*.yaml"))
# grids over an attack's own hyperparameter (clone architecture, loss kind) that the popularity
# clone does not have; the floor of those targets is in table4-ml1m.yaml
NO_FLOOR = {"zhu2023/fig6-architectures.yaml", "zhu2023/table7-ml1m.yaml"}


def _name(path: Path) -> str:
    return path.relative_to(EXPERIMENTS).as_posix()


def _is_tune_file(path: Path) -> bool:
    """A Tune file has a ``search_space`` section (whatever its name)."""
    return any(line.startswith("search_space:") for line in path.read_text().splitlines())


def test_the_experiments_folder_is_found():
    assert len(FILES) >= 20


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_each_shipped_file_parses(path):
    if path.parent.name == "simulate":
        assert load_simulation(path).attacker_runs()
    elif _is_tune_file(path):
        assert load_tune(path) is not None
    else:
        assert expand_runs(load_experiment(path))


@pytest.mark.parametrize("path", [p for p in FILES if p.parent.name != "simulate" and not _is_tune_file(p)], ids=_name)
def test_each_experiment_grid_reports_the_popularity_floor(path):
    attacks = {run.attack_name for run in expand_runs(load_experiment(path))}
    assert ("popularity" in attacks) != (_name(path) in NO_FLOOR), sorted(attacks)
