"""One slice of an experiment's grid: ``raysteal run --where KEY=V1,V2``.

A run's id is a hash of its own specification, never of the rest of the grid, so the runs a slice
selects are the very runs of the whole file: running the whole file later into the same results
directory resumes them instead of repeating them (see :func:`raysteal.results.store.run_id`).
"""

from __future__ import annotations

import math
from typing import Any

from raysteal.errors import ConfigError
from raysteal.experiment.config import ExperimentConfig

# What an attack entry without the key is matched as: ``--where attack.baseline=none``.
MISSING = "none"


def parse_where(text: str) -> tuple[str, list[str]]:
    """``"split.attacker_fraction=0.1,0.3"`` -> ``("split.attacker_fraction", ["0.1", "0.3"])``;
    anything else is a ``ConfigError`` naming the option."""
    key, sep, values = text.partition("=")
    names = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key.strip() or not names:
        raise ConfigError(f"--where {text!r}: write KEY=VALUE[,VALUE...], e.g. --where split.attacker_fraction=0.3")
    return key.strip(), names


def matches(value: Any, wanted: str) -> bool:
    """Whether a setting's ``value`` is the one written as ``wanted`` (numbers compare as numbers,
    so ``0.30`` finds ``0.3``; ``true``/``false`` find booleans; a missing value is ``none``)."""
    if value is None:
        return wanted.lower() in (MISSING, "null")
    if isinstance(value, bool):
        return wanted.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return math.isclose(float(wanted), float(value), rel_tol=1e-9, abs_tol=0.0)
        except ValueError:
            return False
    return str(value) == wanted


def select_where(config: ExperimentConfig, key: str, wanted: list[str]) -> ExperimentConfig:
    """``config`` restricted to the runs whose ``key`` takes one of ``wanted``.

    ``key`` is either one of the file's ``grid`` keys (its values are cut to the wanted ones) or
    ``attack.<setting>`` of the attack entries (entries are kept whose setting matches; an entry
    without it matches ``none``). A value that selects nothing is an error that lists the choices."""
    if key in config.grid:
        values = config.grid[key]
        kept = [v for v in values if any(matches(v, w) for w in wanted)]
        missing = [w for w in wanted if not any(matches(v, w) for v in values)]
        if missing:
            raise ConfigError(
                f"--where {key}={','.join(wanted)}: the grid's values of {key} are {', '.join(str(v) for v in values)}; not {missing[0]}"
            )
        return config.model_copy(update={"grid": {**config.grid, key: kept}})
    section, _, setting = key.partition(".")
    if section == "attack" and setting:
        if any(name.startswith("attack.") for name in config.grid):
            raise ConfigError(
                f"--where {key}: this experiment's grid overrides attack settings, so its entries are "
                "not its runs' attacks; select with a grid key instead"
            )
        entries = [a for a in config.attacks if any(matches(a.get(setting), w) for w in wanted)]
        if not entries:
            seen = sorted({str(a.get(setting, MISSING)) for a in config.attacks})
            raise ConfigError(
                f"--where {key}={','.join(wanted)}: no attack entry has it; the entries' {setting} values are {', '.join(seen)}"
            )
        return config.model_copy(update={"attacks": entries})
    grid_keys = ", ".join(config.grid) or "none"
    raise ConfigError(f"--where {key}: not one of the grid's keys ({grid_keys}) nor an attack setting (attack.<key>)")


def select_all(config: ExperimentConfig, clauses: list[str]) -> ExperimentConfig:
    """Every ``--where`` clause applied in turn (each narrows what the ones before it kept)."""
    for clause in clauses:
        key, wanted = parse_where(clause)
        config = select_where(config, key, wanted)
    return config
