"""Tune files: an experiment file plus a ``search_space`` and a ``tune`` section.

.. code-block:: yaml

    experiment: ptaq-sweep            # ... every experiment key (one run cell) ...
    search_space:                     # experiment-config paths, like ``grid``
      attack.margin: {uniform: [0.1, 1.0]}
      attack.lr: {loguniform: [1.0e-4, 1.0e-2]}
      budget: {choice: [50, 100, 200]}
    tune:
      metric: agr@k/heldout
      mode: max
      num_samples: 16
      scheduler: {asha: {grace_period: 5, reduction_factor: 2}}   # the default; null = FIFO
      searcher: optuna                # optuna (TPE) | hyperopt (when installed) | null or random (random/grid)
      max_concurrent: 4
      resources: {cpu: 1, gpu: null}  # gpu null: a quarter GPU when the cluster has GPUs
      seed: 0                         # seeds the sampling order and the searcher (Optuna's TPESampler)

Distributions are Ray Tune's own (``uniform``, ``quniform``, ``loguniform``, ``qloguniform``,
``randint``, ``qrandint``, ``lograndint``, ``randn``, ``choice``, ``grid``). Everything is
validated before anything launches: an unknown distribution, an empty choice, a key the
experiment does not have, a sampled value the attack rejects, or a metric the runs do not
report raises :class:`~raysteal.errors.ConfigError` naming the key. The file is parsed by
popping ``search_space`` and ``tune`` and passing the rest to :func:`parse_experiment`.

Every trial shares one deployed target, so the experiment must describe exactly one run cell
(one dataset, target, attack and defense setting), and keys that would change the target
(``target.*``, ``split.aux_fraction``, ``split.item_overlap``, ``split.target_seed``) cannot be
searched. Trials run seed 0 unless ``seed`` is in the search space.

The best trial is the one whose metric peaked highest (``mode: min``: lowest) over all the epochs
it reported, ASHA-stopped trials included, and the best configuration is written with the
attack's epoch counts cut to that peak epoch (:func:`epoch_overrides`), so running it trains the
same student to the same point (:data:`RULE_PEAK`). A model-based searcher learns from the same
peak value (``tune_peak``), not from the trial's last epoch.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from raysteal.config_numbers import NumbersAreNotBooleans
from raysteal.errors import ConfigError
from raysteal.experiment.config import GRID_SECTIONS, ExperimentConfig, SplitConfig, format_validation, parse_experiment, read_config_file
from raysteal.experiment.evaluation import evaluation_for
from raysteal.experiment.run import Run, expand_runs

DISTRIBUTIONS: dict[str, str] = {
    "uniform": "[low, high]",
    "quniform": "[low, high, q]",
    "loguniform": "[low, high] with low > 0",
    "qloguniform": "[low, high, q] with low > 0",
    "randint": "[low, high) integers",
    "qrandint": "[low, high, q] integers (high inclusive)",
    "lograndint": "[low, high) integers with low > 0",
    "randn": "[mean, sd]",
    "choice": "[value, ...] (non-empty)",
    "grid": "[value, ...] (non-empty; every value is tried)",
}
"""Supported distribution names and their arguments (Ray Tune's search space API)."""

FROZEN_KEYS = ("target.", "split.aux_fraction", "split.item_overlap", "split.target_seed")
"""Search keys that would change the deployed target (trials share one target)."""

SEARCHERS: dict[str, str] = {
    "optuna": "Optuna's TPE sampler (model-based), seeded from tune.seed",
    "hyperopt": "HyperOpt's TPE (model-based), seeded from tune.seed",
}
"""Model-based searchers (``tune.searcher``); ``null`` or ``random`` samples the space at random
(grid points crossed), seeded from ``tune.seed``."""

SEARCHER_UNSUPPORTED: dict[str, dict[str, str]] = {
    "optuna": {
        "grid": "use choice",
        "randn": "Optuna has no normal distribution; use uniform",
        "qloguniform": "Optuna drops the quantisation of a log-scale float; use loguniform or lograndint",
    },
    "hyperopt": {"grid": "use choice"},
}
"""Distributions a searcher cannot sample (validated before launch, naming the key)."""

RULE_PEAK = "best over all reported epochs; epochs set to the peak epoch"
"""How the best trial is chosen when the metric is reported after every epoch."""


def rule_smoothed_peak(window: int) -> str:
    """How the best trial is chosen with ``tune.peak_window`` > 1 (the metric reported every epoch)."""
    return f"best peak of each trial's {window}-epoch centred moving average over all reported epochs; epochs set to that epoch"


RULE_FINAL = "best final value (the metric is reported only when a trial ends); epochs as searched"
"""How the best trial is chosen when the metric is reported once, at the end."""


class _Strict(NumbersAreNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class AshaSettings(_Strict):
    """ASHA (Li et al. 2020) over clone-training epochs: ``max_t`` caps a trial's epochs (None: the
    attack's own length), rungs at ``grace_period * reduction_factor**i``. The default first rung
    is epoch 5, as the tune-file reference says: at epoch 1 every student is near the floor and a
    cut there is noise (a grid of three objectives lost its KL trial that way)."""

    max_t: int | None = Field(default=None, ge=1)
    grace_period: int = Field(default=5, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1)
    brackets: int = Field(default=1, ge=1)


class Resources(_Strict):
    cpu: float = Field(default=1.0, gt=0, description="CPUs per trial")
    gpu: float | None = Field(default=None, ge=0, description="GPUs per trial (None: a quarter GPU when the cluster has GPUs, else 0)")


class TuneSettings(_Strict):
    metric: str = Field(default="agr@k/heldout", description="row metric to optimise")
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(default=1, ge=1, description="samples of the search space (each grid point is repeated this often)")
    scheduler: AshaSettings | None = Field(default_factory=AshaSettings, description="ASHA (default) or None for FIFO")
    searcher: Literal["optuna", "hyperopt"] | None = Field(
        default=None, description="model-based searcher (SEARCHERS) or None: random/grid sampling"
    )
    max_concurrent: int | None = Field(default=None, ge=1)
    resources: Resources = Field(default_factory=Resources)
    seed: int = Field(default=0, ge=0, description="seed of the search (sampling order, searcher)")
    peak_window: int = Field(
        default=1,
        ge=1,
        le=50,
        description=(
            "epochs of the centred moving average a trial's per-epoch metric is smoothed over before its peak is read "
            "(the best trial, its epoch in best.yaml, what the searcher learns); 1: the raw per-epoch peak"
        ),
    )


class TuneExperiment(BaseModel):
    """A validated tune file: the experiment (one run cell), its search space and the settings."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    experiment: ExperimentConfig
    search_space: dict[str, dict[str, Any]]
    tune: TuneSettings
    raw_experiment: dict[str, Any]

    @property
    def name(self) -> str:
        return self.experiment.experiment

    def base_run(self) -> Run:
        """The experiment's single run (seed 0) that every trial overrides."""
        return expand_runs(self.experiment, seeds=1)[0]

    def to_json(self) -> str:
        """Canonical text of the whole file (a resumed sweep must be the same file)."""
        return json.dumps(
            {**self.raw_experiment, "search_space": self.search_space, "tune": self.tune.model_dump()}, sort_keys=True, default=str
        )


def _parse_scheduler(raw: Any, source: str) -> Any:
    """``{asha: {...}}`` / ``"asha"`` / missing → ASHA; ``None`` / ``"fifo"`` → FIFO."""
    if raw is None or raw == "fifo":
        return None
    if raw == "asha":
        return {}
    if isinstance(raw, dict) and set(raw) == {"asha"}:
        return raw["asha"] or {}
    if isinstance(raw, dict) and set(raw) == {"fifo"}:
        return None
    raise ConfigError(
        f"{source}: tune.scheduler: expected {{asha: {{max_t, grace_period, reduction_factor}}}}, 'fifo' or null, got {raw!r}"
    )


def _parse_searcher(raw: Any, source: str) -> str | None:
    """``optuna`` / ``hyperopt`` → that searcher; ``None`` / ``"random"`` → random (and grid) sampling."""
    if raw is None or raw == "random":
        return None
    if isinstance(raw, str) and raw in SEARCHERS:
        return raw
    known = "; ".join(f"{name} ({what})" for name, what in SEARCHERS.items())
    raise ConfigError(f"{source}: tune.searcher: unknown searcher {raw!r}; known: {known}; or null / random (random sampling)")


def _check_distribution(key: str, spec: Any, source: str) -> tuple[str, list[Any]]:
    where = f"{source}: search_space.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one distribution, e.g. {{uniform: [0.1, 1.0]}}; known: {', '.join(DISTRIBUTIONS)}")
    ((name, args),) = spec.items()
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {name!r}; known: {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list):
        raise ConfigError(f"{where}: {name} takes a list {DISTRIBUTIONS[name]}, got {args!r}")
    if name in ("choice", "grid"):
        if not args:
            raise ConfigError(f"{where}: {name} needs at least one value")
        return name, args
    arity = 3 if name in ("quniform", "qloguniform", "qrandint") else 2
    if len(args) != arity or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args):
        raise ConfigError(f"{where}: {name} takes {DISTRIBUTIONS[name]}, got {args!r}")
    if name == "randn":
        if args[1] <= 0:
            raise ConfigError(f"{where}: randn needs sd > 0, got {args[1]}")
        return name, args
    low, high = args[0], args[1]
    if not low < high:
        raise ConfigError(f"{where}: {name} needs low < high, got {args[:2]}")
    if name in ("loguniform", "qloguniform", "lograndint") and low <= 0:
        raise ConfigError(f"{where}: {name} needs low > 0, got {low}")
    if name in ("randint", "qrandint", "lograndint") and not all(float(a).is_integer() for a in args):
        raise ConfigError(f"{where}: {name} takes integers, got {args!r}")
    if arity == 3 and args[2] <= 0:
        raise ConfigError(f"{where}: {name} needs q > 0, got {args[2]}")
    return name, args


def candidate_values(name: str, args: list[Any]) -> list[Any]:
    """Values a distribution can produce, to validate against the experiment before launch:
    every choice, else the bounds and one interior point (fractional for continuous ones)."""
    if name in ("choice", "grid"):
        return list(args)
    if name == "randn":  # unbounded: the mean, a fractional draw, and three standard deviations either side
        mean, sd = float(args[0]), float(args[1]) if len(args) > 1 else 1.0
        return [mean, mean + 0.377 * sd, mean - 3 * sd, mean + 3 * sd]
    low, high = args[0], args[1]
    if name == "randint":
        return [int(low), int(high) - 1]
    if name in ("qrandint", "lograndint"):
        return [int(low), int(high) - (1 if name == "lograndint" else 0)]
    if name in ("loguniform", "qloguniform"):
        inner = math.exp(math.log(low) + 0.377 * (math.log(high) - math.log(low)))
    else:
        inner = low + 0.377 * (high - low)
    if name in ("quniform", "qloguniform"):
        q = args[2]
        return [round(low / q) * q, round(high / q) * q, round(inner / q) * q]
    return [float(low), float(high), inner]


def apply_sample(run: Run, sample: dict[str, Any]) -> Run:
    """``run`` with the sampled ``{key: value}`` overrides applied (``seed`` included), validated."""
    return run.override({key: _plain(value) for key, value in sample.items()})


def _plain(value: Any) -> Any:
    """numpy scalars (what Tune samples) as Python values (YAML/JSON-safe)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def _validate_key(raw: dict[str, Any], key: str, name: str, args: list[Any], source: str) -> None:
    where = f"{source}: search_space.{key}"
    if key == "seed":
        bad = [v for v in candidate_values(name, args) if not (isinstance(v, int) or float(v).is_integer()) or v < 0]
        if bad:
            raise ConfigError(f"{where}: seeds must be non-negative integers, got {bad}")
        return
    section = key.split(".", 1)[0]
    if section not in GRID_SECTIONS:
        raise ConfigError(f"{where}: keys must be 'seed' or start with one of {sorted(GRID_SECTIONS)}")
    if any(key == f or (f.endswith(".") and key.startswith(f)) for f in FROZEN_KEYS):
        raise ConfigError(f"{where}: cannot be searched: trials share one deployed target, and this key changes it")
    if key in raw.get("grid", {}):
        raise ConfigError(f"{where}: also in grid; a key is either crossed (grid) or searched")
    values = candidate_values(name, args)
    field = key.partition(".")[2]
    for value in values:
        if key == "budget" and value is not None and not (_whole_number(value) and value >= 0):
            raise ConfigError(f"{where}: budgets must be integers >= 0 (or null), got {value!r}")
        if key == "k" and not (_whole_number(value) and value >= 1):
            raise ConfigError(f"{where}: k must be an integer >= 1, got {value!r}")
        if section == "split":
            try:
                SplitConfig(**{**raw.get("split", {}), field: value})
            except ValidationError as err:
                raise ConfigError(format_validation(err, where)) from None
    distinct = list({json.dumps(v, sort_keys=True, default=str): v for v in values}.values())  # a grid_search may repeat a value
    try:
        parse_experiment({**raw, "grid": {**raw.get("grid", {}), key: distinct}}, source=source, seeds=1)
    except ConfigError as err:
        raise ConfigError(f"{where} (values {values}): {str(err).removeprefix(f'{source}: ')}") from None


def _whole_number(value: object) -> TypeGuard[int | float]:
    """An int or a float with no fraction (a boolean is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()


def parse_tune(raw: dict[str, Any], source: str = "tune file") -> TuneExperiment:
    """Validate a tune mapping (see the module docstring); nothing is launched."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a tune file must be a mapping of keys")
    raw = dict(raw)
    space = raw.pop("search_space", None)
    tune_raw = raw.pop("tune", None) or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{source}: search_space: a tune file needs a non-empty search_space mapping")
    if not isinstance(tune_raw, dict):
        raise ConfigError(f"{source}: tune: expected a mapping, got {tune_raw!r}")
    if "only_seeds" in raw:
        raise ConfigError(f"{source}: only_seeds: does not apply to a tune file (a trial's seed is search_space.seed)")
    experiment = parse_experiment(raw, source=source)
    runs = expand_runs(experiment, seeds=1)
    if len(runs) != 1:
        raise ConfigError(
            f"{source}: a tune file describes one run cell (one dataset, target, attack, defense setting, no grid); "
            f"this one has {len(runs)}: put alternatives in search_space as choice or grid"
        )
    parsed = {}
    for key, spec in space.items():
        name, args = _check_distribution(str(key), spec, source)
        _validate_key(raw, str(key), name, args, source)
        parsed[str(key)] = {name: args}
    tune_raw = dict(tune_raw)
    if "scheduler" in tune_raw:
        tune_raw["scheduler"] = _parse_scheduler(tune_raw["scheduler"], source)
    if "searcher" in tune_raw:
        tune_raw["searcher"] = _parse_searcher(tune_raw["searcher"], source)
    try:
        settings = TuneSettings(**tune_raw)
    except ValidationError as err:
        message = format_validation(err, source)
        raise ConfigError(message.replace(f"{source}: ", f"{source}: tune.", 1)) from None
    _validate_settings(settings, parsed, runs[0], source)
    return TuneExperiment(experiment=experiment, search_space=parsed, tune=settings, raw_experiment=raw)


def reported_metrics(run: Run, per_epoch: bool) -> tuple[str, ...]:
    """The metrics a trial of ``run`` reports after every epoch (``per_epoch``) or at its end."""
    evaluation = evaluation_for(run)
    return evaluation.probe_metrics if per_epoch else evaluation.final_metrics


def _validate_settings(settings: TuneSettings, space: dict[str, dict[str, Any]], run: Run, source: str) -> None:
    allowed = reported_metrics(run, per_epoch=settings.scheduler is not None)
    if settings.metric not in allowed:
        why = "ASHA needs a metric reported after every epoch" if settings.scheduler is not None else "the runs report"
        raise ConfigError(f"{source}: tune.metric: {settings.metric!r} is not reported ({why}: {', '.join(allowed)})")
    if "heldout" in settings.metric and run.split.query_fraction >= 1.0 and "split.query_fraction" not in space:
        raise ConfigError(
            f"{source}: tune.metric: {settings.metric!r} needs held-out users, but split.query_fraction is 1 (every known user is queried)"
        )
    if settings.searcher is not None:
        if importlib.util.find_spec(settings.searcher) is None:
            raise ConfigError(
                f"{source}: tune.searcher: {settings.searcher!r} is not installed (pip install {settings.searcher}), or set it to null"
            )
        unsupported = SEARCHER_UNSUPPORTED.get(settings.searcher, {})
        for key, spec in space.items():
            ((name, _),) = spec.items()
            if name in unsupported:
                raise ConfigError(
                    f"{source}: search_space.{key}: {name} is not supported with searcher {settings.searcher!r}; {unsupported[name]}"
                )


def load_tune(path: str | Path) -> TuneExperiment:
    """Read and validate a tune file (YAML or JSON)."""
    raw = read_config_file(path, "tune")
    return parse_tune(raw, source=str(path))


def epoch_overrides(attack: dict[str, Any], phase: str, phase_epoch: int) -> dict[str, int]:
    """The attack's epoch counts that end its student/clone training at epoch ``phase_epoch`` of
    ``phase`` (what a trial's epoch report names), every later phase left out.

    Training is deterministic from the seed and no schedule depends on the epoch count, so a run
    with these counts ends with the model the trial had at that epoch. Zhu et al.'s attacks
    train the clone on the attacker's data (``clone``: ``epochs``), then on the queried lists
    (``steal``: ``finetune_epochs``; the queries are still sent); sequential students train for
    ``epochs`` (``seq_ptd`` reports its data phase: ``data_epochs``; with ``data_patience`` its
    final model is the best-validated one, not the last epoch's, so that case is not reproduced
    exactly)."""
    epoch = int(phase_epoch)
    if phase == "clone":
        return {"epochs": epoch, "finetune_epochs": 0}
    if phase == "steal":
        return {"finetune_epochs": epoch}
    if phase == "student":
        return {"data_epochs": epoch} if attack.get("attack") == "seq_ptd" else {"epochs": epoch}
    if not phase:
        raise ConfigError("the trial's peak epoch is not known (it reported before peaks were tracked)")
    raise ConfigError(f"no epoch count of attack {attack.get('attack')!r} ends its phase {phase!r}")


def best_experiment(
    tune: TuneExperiment, sample: dict[str, Any], note: str = "", attack_overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ready-to-run experiment mapping: the tune file's experiment with ``sample`` written in
    (``seed`` is not: the best configuration is meant to be re-run over the file's seeds), then
    ``attack_overrides`` (e.g. :func:`epoch_overrides` of the trial's peak)."""
    raw = copy.deepcopy(tune.raw_experiment)
    for key, value in sample.items():
        value = _plain(value)
        section, _, field = key.partition(".")
        if key == "seed":
            continue
        if section in ("k", "budget"):
            raw[section] = value
        elif section == "attack":
            raw["attacks"] = [{**raw["attacks"][0], field: value}]
        elif section == "split":
            raw["split"] = {**raw.get("split", {}), field: value}
    if attack_overrides:
        raw["attacks"] = [{**raw["attacks"][0], **{key: _plain(value) for key, value in attack_overrides.items()}}]
    description = (str(raw.pop("description", "")).strip() + f"\nBest configuration of the tune sweep {tune.name!r}. {note}").strip()
    raw.pop("experiment", None)
    raw = {"experiment": f"{tune.name}-best", "description": description, **raw}
    parse_experiment(raw, source="best configuration")  # loadable by raysteal run
    return raw
