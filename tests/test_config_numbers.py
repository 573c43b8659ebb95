"""YAML's true/false are not numbers: a boolean for a numeric config key is refused, by name."""

from __future__ import annotations

import pytest
import yaml

from raysteal.errors import ConfigError
from raysteal.experiment.config import parse_experiment
from raysteal.training.config import make_train_config

BASE = yaml.safe_load("""
experiment: numbers
datasets: [{name: synthetic}]
targets: [{model: bpr}]
attacks: [{attack: ptd}]
seeds: 1
k: 10
""")


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ({"k": True}, "k: must be a number, got true"),
        ({"seeds": True}, "seeds: must be a number, got true"),
        ({"budget": False}, "budget: must be a number, got false"),
        ({"split": {"attacker_fraction": True}}, "attacker_fraction: must be a number"),
        ({"attacks": [{"attack": "ptd", "epochs": True}]}, "epochs: must be a number"),
        ({"targets": [{"model": "bpr", "params": {"embedding_dim": True}}]}, "embedding_dim: must be a number"),
        ({"targets": [{"model": "bpr", "train": {"lr": True}}]}, "lr: must be a number"),
        ({"defenses": [[{"type": "popular_mixing", "n": True}]]}, "n: must be a number"),
        ({"seeds": 3, "only_seeds": [1, True]}, "only_seeds: must hold numbers, got true among them"),
        ({"paper": {"synthetic/bpr/ptd": False}}, "paper: must hold numbers, got false among them"),
    ],
)
def test_a_boolean_for_a_number_is_refused_by_name(patch, named):
    with pytest.raises(ConfigError, match=named):
        parse_experiment({**BASE, **patch})


def test_numbers_and_real_booleans_still_parse():
    config = parse_experiment({**BASE, "k": 5, "split": {"attacker_fraction": 1}})  # an int for a float is fine
    assert config.k == 5
    bahsd = parse_experiment(
        {
            **BASE,
            "datasets": [{"name": "synthetic", "options": {"max_len": 30}}],
            "targets": [{"model": "sasrec"}],
            "attacks": [{"attack": "bahsd", "budget_queries": 100, "probing": False, "kl_scale_t2": False}],
        }
    )
    assert bahsd.attacks[0]["probing"] is False
    with pytest.raises(ConfigError, match="epochs: must be a number, got true"):
        make_train_config({"epochs": True})
    with pytest.raises(ConfigError, match="probe_scales: must hold numbers, got true"):
        parse_experiment(
            {
                **BASE,
                "datasets": [{"name": "synthetic", "options": {"max_len": 30}}],
                "targets": [{"model": "sasrec"}],
                "attacks": [{"attack": "bahsd", "probe_scales": [0.5, True]}],
            }
        )
