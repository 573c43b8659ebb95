"""``raysteal run --where KEY=VALUES``: one slice of a grid, keeping the whole grid's run ids."""

from __future__ import annotations

import re

import pytest
import yaml

from raysteal.errors import ConfigError
from raysteal.experiment.config import parse_experiment
from raysteal.experiment.run import expand_runs
from raysteal.experiment.selection import matches, parse_where, select_all, select_where
from tests.test_runner import TINY

# test_runner's tiny grid (its two defense settings dropped), crossed with three attacker fractions and two list lengths
SPEC = {
    **{key: value for key, value in TINY.items() if key not in ("defenses", "k")},
    "experiment": "slice",
    "grid": {"split.attacker_fraction": [0.1, 0.3, 1.0], "k": [10, 20]},
}


def _ids(config) -> set[str]:
    return {r.id for r in expand_runs(config)}


def test_a_grid_slice_is_exactly_the_full_grids_runs_with_that_value():
    full = parse_experiment(SPEC)
    everything = {r.id: r for r in expand_runs(full)}
    part = select_where(full, "split.attacker_fraction", ["0.30", "1"])  # numbers compare as numbers
    assert part.grid["split.attacker_fraction"] == [0.3, 1.0] and part.grid["k"] == [10, 20]
    assert _ids(part) == {i for i, r in everything.items() if r.split.attacker_fraction in (0.3, 1.0)}
    assert len(_ids(part)) == len(everything) * 2 // 3


def test_an_attack_setting_keeps_the_entries_that_have_it_and_none_finds_the_others():
    full = parse_experiment(SPEC)
    long = select_where(full, "attack.finetune_epochs", ["15"])
    assert [a["attack"] for a in long.attacks] == ["ptq"]
    plain = select_where(full, "attack.finetune_epochs", ["none"])
    assert [a["attack"] for a in plain.attacks] == ["popularity", "ptd"]
    both = select_all(full, ["attack.attack=ptd,ptq", "split.attacker_fraction=0.1"])
    assert {(r.attack_name, r.split.attacker_fraction) for r in expand_runs(both)} == {("ptd", 0.1), ("ptq", 0.1)}
    assert _ids(both) <= _ids(full)


@pytest.mark.parametrize(
    "clause, message",
    [
        ("split.attacker_fraction", r"write KEY=VALUE"),
        ("=0.3", r"write KEY=VALUE"),
        ("split.attacker_fraction=", r"write KEY=VALUE"),
        ("split.attacker_fraction=0.5", r"values of split.attacker_fraction are 0.1, 0.3, 1.0; not 0.5"),
        ("attack.finetune_epochs=5", r"no attack entry has it; the entries' finetune_epochs values are 15, none"),
        ("split.aux_fraction=0.2", r"not one of the grid's keys \(split.attacker_fraction, k\)"),
    ],
)
def test_bad_clauses_are_one_line_errors(clause, message):
    with pytest.raises(ConfigError, match=message):
        select_all(parse_experiment(SPEC), [clause])


def test_attack_settings_cannot_slice_a_grid_that_overrides_them():
    spec = {**SPEC, "grid": {"attack.attack": ["ptd", "ptq"]}}
    with pytest.raises(ConfigError, match="grid overrides attack settings"):
        select_where(parse_experiment(spec), "attack.epochs", ["none"])


def test_matching_rules():
    assert matches(True, "true") and not matches(True, "1")
    assert matches(None, "none") and matches(None, "null") and not matches(None, "0")
    assert matches(3, "3.0") and not matches(3, "x")
    assert parse_where(" k = 10, 20 ") == ("k", ["10", "20"])


def test_the_cli_refuses_a_bad_slice_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from raysteal.cli import app

    file = tmp_path / "slice.yaml"
    file.write_text(yaml.safe_dump(SPEC))
    result = CliRunner().invoke(app, ["run", str(file), "--out", str(tmp_path / "out"), "--where", "k=30"])
    assert isinstance(result.exception, ConfigError)
    assert re.search(r"--where k=30: the grid's values of k are 10, 20; not 30", str(result.exception))
    assert not (tmp_path / "out").exists()
