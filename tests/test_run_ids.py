"""Run ids are what a results directory resumes by: every shipped experiment file's runs keep
the ids they had when runs were plain dicts (``tests/data/run_ids.json``, written by the code
before the typed :class:`~raysteal.experiment.run.Run`). A change that moves one id would make
every existing results directory of that file start again; it must be deliberate (regenerate
the file and say why). Regenerated for ``quickstart.yaml`` and ``simulate/many-attackers.yaml``
when the BPR preset took dynamic negative sampling: their BPR target is a different model; for
``defenses/watermark-ml1m.yaml`` when it took every sequential attack at the matrix's settings (no
row of the earlier file had been published); for ``bahsd/beauty.yaml`` and
``yue2021/dfme-ml1m-5k.yaml`` when the NARM preset took Yue et al.'s settings: their NARM target is a
different model (no row with a NARM target had been published); for ``zhu2023/fig7-8-defense.yaml``
when it took PTD and PTA beside its other attacks (every earlier id is kept; none had run)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from raysteal.experiment.config import load_experiment
from raysteal.experiment.run import Run, expand_runs, identity_spec
from raysteal.experiment.simulate_config import load_simulation
from raysteal.experiment.tune_config import load_tune
from raysteal.results.store import run_id

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
PINNED = json.loads((Path(__file__).parent / "data" / "run_ids.json").read_text())


def _runs(path: Path) -> list[Run]:
    if path.parent.name == "simulate":
        return load_simulation(path).attacker_runs()
    if any(line.startswith("search_space:") for line in path.read_text().splitlines()):
        return [load_tune(path).base_run()]
    return expand_runs(load_experiment(path))


def test_every_shipped_file_is_pinned():
    assert sorted(PINNED) == sorted(p.relative_to(EXPERIMENTS).as_posix() for p in EXPERIMENTS.rglob("*.yaml"))


@pytest.mark.parametrize("name", sorted(PINNED))
def test_run_ids_of_each_shipped_file_are_unchanged(name):
    ids = [run.id for run in _runs(EXPERIMENTS / name)]
    pinned = PINNED[name]
    assert ids[:2] == pinned["first"]
    assert len(ids) == pinned["runs"]
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest() == pinned["sha256"]


def test_a_run_is_typed_frozen_and_hashes_its_spec():
    run = expand_runs(load_experiment(EXPERIMENTS / "quickstart.yaml"), seeds=1)[0]
    assert run.id == run_id(identity_spec(run.spec))
    assert run.split.attacker_fraction == run.spec["split"]["attacker_fraction"]
    assert run.attack_name == run.spec["attack"]["attack"]
    with pytest.raises(ValidationError, match="frozen"):
        run.seed = 3  # type: ignore[misc]
    moved = run.replace(seed=3)
    assert moved.seed == 3 and moved.id != run.id and run.seed == 0
    assert run.override({"split.attacker_fraction": 0.2}).split.attacker_fraction == 0.2
