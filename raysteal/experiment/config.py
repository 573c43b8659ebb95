"""Declarative experiment files (YAML or JSON), validated before any work starts.

An experiment is a grid: datasets × targets × attacks × defenses × ``grid`` overrides × seeds.
Every key is checked (misspelled keys and out-of-range values fail naming the key).

Seeds: the target/auxiliary split and the target's training use ``target_seed`` (one target per
dataset × model, trained once and cached); each run's ``seed`` draws the attacker's users,
the queried/held-out share and the clone's initialisation.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from raysteal.config_numbers import NumbersAreNotBooleans
from raysteal.data import dataset_names
from raysteal.data.datasets import check_dataset_arguments, check_file_arguments
from raysteal.data.splits import HEAD_FRACTION
from raysteal.errors import ConfigError, DataFileError, RaystealError, UnknownNameError, describe_validation
from raysteal.watermark.spec import make_watermark_config


class _Strict(NumbersAreNotBooleans):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class DatasetEntry(_Strict):
    name: str = Field(description="a registered dataset (`raysteal data list`), or with `path` the label of the user's file")
    preprocess: str = "none"
    kcore: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict, description="generator options (synthetic)")
    path: str | None = Field(
        default=None,
        description="an interaction file of the user's instead of a registered dataset (GroupLens ratings.dat / u.data,"
        " RecBole .inter, CSV / TSV / Parquet, ...; see raysteal.data.load_file); every Ray node must see it at this path",
    )
    format: str | None = Field(default=None, description="with path: the file's format (default: guessed from its name)")
    columns: dict[str, Any] = Field(default_factory=dict, description="with path: parser options (CSV: user, item, timestamp, delimiter)")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # Ray workers may not share the driver's working directory: pin the path now
        return None if value is None else str(Path(value).expanduser().resolve())

    @model_validator(mode="after")
    def _file_settings_need_a_file(self) -> DatasetEntry:
        if self.path is None and (self.format is not None or self.columns):
            raise ValueError("format / columns describe a file: set path too")
        if self.path is not None and self.options:
            raise ValueError("options are a generated dataset's; a file takes format and columns")
        clash = sorted(set(self.columns) & {"path", "format", "preprocess", "name", "kcore"})
        if clash:
            raise ValueError(f"columns: {', '.join(clash)} are the entry's own settings, not parser options")
        return self

    @property
    def label(self) -> str:
        return self.name


class TargetEntry(_Strict):
    model: str
    params: dict[str, Any] = Field(default_factory=dict, description="model hyperparameters")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides")
    checkpoint: str | None = Field(
        None,
        description="a trained target (`raysteal train-target` OUT/checkpoint.pt, `benchmarks/targets.py --save-dir`)"
        " used instead of training one; it must have been trained on this experiment's target log",
    )

    watermark: dict[str, Any] | None = Field(
        None,
        description="sequential targets: an ownership watermark trained in (key, sequences, length, copies;"
        " raysteal.watermark, `raysteal verify`); part of the target's cache key",
    )
    gro: dict[str, Any] | None = Field(
        None,
        description="GRO (Zhang et al., WSDM 2024) trained in against a simulated student (sequential next-item and collaborative targets)"
        " (strength, k, student, margin, student_lr, positions; raysteal.training.gro); part of the target's cache key",
    )

    @field_validator("checkpoint")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # Ray workers may not share the driver's working directory: pin the path now
        return None if value is None else str(Path(value).expanduser().resolve())

    @field_validator("watermark")
    @classmethod
    def _valid_watermark(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        try:
            return None if value is None else make_watermark_config(value).model_dump()
        except ConfigError as err:
            raise ValueError(str(err).removeprefix("watermark: ")) from None

    @model_validator(mode="after")
    def _watermark_needs_training(self) -> TargetEntry:
        if self.watermark is not None and self.checkpoint is not None:
            raise ValueError(
                "watermark: a checkpoint target is trained already; train the watermark in with `raysteal train-target --watermark-key`"
            )
        return self

    @field_validator("gro")
    @classmethod
    def _valid_gro(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # loads torch: imported where it is used, so this module loads without it
        from raysteal.training.gro import make_gro_config

        try:
            return None if value is None else make_gro_config(value).model_dump()
        except ConfigError as err:
            raise ValueError(str(err).removeprefix("gro: ")) from None

    @model_validator(mode="after")
    def _gro_needs_a_next_item_target(self) -> TargetEntry:
        if self.gro is None:
            return self
        if self.checkpoint is not None:
            raise ValueError("gro: a checkpoint target is trained already; train GRO in with `raysteal train-target --gro-strength`")
        # loads torch: imported where it is used, so this module loads without it
        from raysteal.training.gro import gro_capable

        try:
            problem = gro_capable(self.model)
        except UnknownNameError:
            return self  # the unknown model is reported where every target's config is checked
        if problem is not None:
            raise ValueError(f"gro: {problem}")
        return self

    @property
    def label(self) -> str:
        return self.model


class SplitConfig(_Strict):
    aux_fraction: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="share of users in the auxiliary half (0: the whole log is the target's, no auxiliary data — Yue et al.'s data-free setting)",
    )
    item_overlap: float = Field(default=1.0, gt=0, le=1, description="Fig. 5: share of items the halves share")
    attacker_fraction: float = Field(default=0.1, gt=0, le=1, description="share of target users the attacker knows")
    auxiliary_size: float = Field(default=1.0, gt=0, le=1, description="Fig. 4: share of the auxiliary half the attacker holds")
    query_fraction: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="share of known users queried; the rest are held out (1.0: every known user, as Zhu et al.'s Alg. 1)",
    )
    target_training: Literal["leave_one_out", "whole"] = Field(
        default="leave_one_out",
        description=(
            "collaborative targets: 'leave_one_out' trains on each target user's history less its last two items (validation,"
            " test); 'whole' (Zhu et al.'s protocol) on every interaction of the target half, for the epochs early stopping"
            " chose for the leave-one-out target of the same settings (trained first, and cached); nothing is held out, so"
            " the rows' held-out accuracy columns are NaN"
        ),
    )
    attacker_unit: Literal["users", "interactions"] = Field(
        default="users",
        description=(
            "collaborative targets: what attacker_fraction is a share of. 'users': the attacker holds whole histories of that"
            " share of the target users; 'interactions': that share of the target's interactions, drawn uniformly, so it"
            " knows every user with at least one of them (the other reading of Zhu et al.'s '10% of the target dataset')"
        ),
    )
    target_seed: int = Field(default=0, ge=0)
    head_fraction: float = Field(
        default=HEAD_FRACTION,
        gt=0,
        lt=1,
        description="head users (head/tail metrics): this share of the target's users with the longest histories",
    )
    attacker_population: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description=(
            "sequential targets: this share of the target's users (drawn from target_seed, the same for every run) is the "
            "attacker population, user-disjoint from the scored users; an attacker with real data holds attacker_fraction of "
            "it, and no attack is scored on it. None: the attacker holds attacker_fraction of all target users (Zhu et al.)"
        ),
    )
    scored_users: Literal["all", "search", "report"] = Field(
        default="all",
        description=(
            "sequential targets: score all evaluable users outside the attacker population, or one of two fixed disjoint "
            "halves of them (from target_seed): tune on 'search', report on 'report'"
        ),
    )


class ReportEntry(_Strict):
    """One table or figure of ``raysteal report`` (columns are checked against the rows then)."""

    kind: Literal["table", "curve", "heatmap", "matrix", "pareto"] = Field(
        "table",
        description="table; curve (x against a metric); heatmap (rows x cols); matrix (attack x defense, one panel per metric);"
        " pareto (attack fidelity against the defense's cost to the target, the non-dominated front drawn)",
    )
    title: str = ""
    metrics: list[str] | None = Field(
        None,
        min_length=1,
        description="table: the metric columns (default agr@k, agr@k/heldout, agr@10); matrix: one panel each (default agr@k, agr@k/lift)",
    )
    metric: str = Field("agr@k", description="curve / heatmap: the metric plotted; pareto: the attack's fidelity (y)")
    x: str | None = Field(None, description="curve: the column on the x axis (required)")
    xlabel: str | None = None
    series: str = Field("attack", description="curve: one line per value of this column")
    facet: str | None = Field(None, description="curve / heatmap / matrix / pareto: one panel per value of this column")
    rows: str = Field("target", description="heatmap: row column")
    cols: str = Field("clone", description="heatmap: column column")
    relative_to: dict[str, str] | None = Field(
        None,
        description="table: one reference configuration, {column: value} (e.g. {variant: search-best}), whose mean each"
        " row is compared with (relative difference in %), the reference taken from every row of the results directory"
        " in the same setting; an ablation table",
    )
    relative_metrics: list[str] | None = Field(
        None, min_length=1, description="table with relative_to: the metrics compared with the reference (default: the table's first)"
    )
    cost: str | None = Field(
        None,
        description="pareto: the target's own accuracy, whose relative drop from the undefended target's is the x axis"
        " (default target_ndcg@k/defended; a column not measured under the serving defense, such as"
        " target_test_ndcg@10_full, places only the defenses trained into the target)",
    )

    @model_validator(mode="after")
    def _curve_has_x(self) -> ReportEntry:
        if self.kind == "curve" and not self.x:
            raise ValueError("a curve needs 'x' (the column on its x axis)")
        if self.cost is not None and self.kind != "pareto":
            raise ValueError(f"'cost' is the x axis of a pareto figure, not of a {self.kind}")
        if (self.relative_to is not None or self.relative_metrics is not None) and self.kind != "table":
            raise ValueError(f"'relative_to' and 'relative_metrics' belong to a table, not to a {self.kind}")
        if self.relative_to is not None and (
            len(self.relative_to) != 1 or not all(k.strip() and v.strip() for k, v in self.relative_to.items())
        ):
            raise ValueError(f"'relative_to' names one reference as {{column: value}}, e.g. {{variant: defaults}}; got {self.relative_to}")
        if self.relative_metrics is not None and self.relative_to is None:
            raise ValueError("'relative_metrics' needs 'relative_to' (the reference they are compared with)")
        if self.cost is not None and not self.cost.strip():
            raise ValueError("'cost' must name a column (the target's accuracy, e.g. target_ndcg@k/defended)")
        return self


class ExperimentConfig(_Strict):
    experiment: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=120,
        description="name (letters, digits, '.', '_', '-'; it names files and the default output directory); results rows carry it",
    )
    description: str = ""
    seeds: int = Field(5, ge=1)
    only_seeds: list[int] | None = Field(
        None,
        min_length=1,
        description=(
            "run only these of the seeds 0..seeds-1 (e.g. [1, 2]: the rest of a study later, or on another machine); None: all of them"
        ),
    )
    datasets: list[DatasetEntry] = Field(min_length=1)
    targets: list[TargetEntry] = Field(min_length=1)
    attacks: list[dict[str, Any]] = Field(min_length=1, description="attack configs (raysteal.attacks)")
    defenses: list[list[dict[str, Any]]] = Field(
        default_factory=lambda: [[]], min_length=1, description="defense settings to cross ([[]]: none; an empty list would make no runs)"
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    k: int = Field(50, ge=1, description="list length K of Agr@K")
    budget: int | None = Field(None, ge=0, description="queries per attacker (None: unlimited)")
    query_cache: bool = Field(
        False, description="attackers remember their answers: a repeated query is answered from memory, uncharged (raysteal.oracle.cache)"
    )
    require_target_lift: float | None = Field(
        None,
        gt=0,
        description=(
            "refuse to attack a target whose full-ranking test NDCG@10 is under this multiple of the popularity recommender's on "
            "the same users (the popularity guard, raysteal.training.guard; `raysteal run --require-target-lift`); None: never refuse"
        ),
    )
    target_lift_warning: float | None = Field(
        1.2,
        gt=0,
        description=(
            "warn about a target whose full-ranking test NDCG@10 is under this multiple of the popularity recommender's; None: no warning"
        ),
    )
    grid: dict[str, list[Any]] = Field(
        default_factory=dict,
        description=(
            "'section.key' -> values, crossed; 'split' or 'attack' -> mappings of settings that change together"
            " ({split: [{}, {query_fraction: 1.0, target_training: whole}]})"
        ),
    )
    paper: dict[str, float] = Field(default_factory=dict, description="'dataset/target/attack' -> published value")
    report: list[ReportEntry] = Field(default_factory=list, description="tables/figures for raysteal report")

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            section = key.split(".", 1)[0]
            if section not in GRID_SECTIONS:
                raise ValueError(f"grid key {key!r}: must start with one of {sorted(GRID_SECTIONS)}")
            if section in ("k", "budget") and key != section:
                raise ValueError(f"grid key {key!r}: {section!r} takes no sub-key (write {section!r})")
            if not values:
                raise ValueError(f"grid key {key!r}: needs at least one value")
            if section in ("split", "attack") and key == section:  # settings that change together: one mapping each
                if not all(isinstance(v, dict) for v in values):
                    raise ValueError(f"grid key {key!r}: each value must be a mapping of {section} settings (or write '{section}.<key>')")
            elif section in ("split", "target", "attack") and not key.partition(".")[2]:
                raise ValueError(f"grid key {key!r}: name the {section} setting ('{section}.<key>')")
        return grid


GRID_SECTIONS = {"split", "attack", "target", "k", "budget"}


def format_validation(err: ValidationError, source: str) -> str:
    return f"{source}: {describe_validation(err)}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the last would silently win)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"key {twice[0]!r} given twice")
    return dict(pairs)


def read_config_file(path: str | Path, kind: str) -> dict[str, Any]:
    """The mapping in a YAML or JSON ``kind`` file (experiment, tune, simulation): a missing file,
    a directory, a file that is not UTF-8 text, invalid YAML/JSON, a key given twice, an empty
    file or one that is not a mapping is a ``ConfigError`` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{kind} file {path}: is a directory")
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (not UTF-8: {err.reason} at byte {err.start})") from None
    as_json = path.suffix == ".json"
    try:
        raw = json.loads(text, object_pairs_hook=_unique_pairs) if as_json else yaml.load(text, Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid {'JSON' if as_json else 'YAML'}: {err}") from None
    if raw is None:
        raise ConfigError(f"{path}: the {kind} file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the {kind} file must be a mapping of keys")
    return raw


def load_experiment(path: str | Path, seeds: int | None = None, only_seeds: list[int] | None = None) -> ExperimentConfig:
    """Read and validate an experiment file; every attack and defense entry is validated too.
    ``seeds`` / ``only_seeds`` override the file's (``raysteal run --seeds`` / ``--only-seeds``)."""
    return parse_experiment(read_config_file(path, "experiment"), source=str(path), seeds=seeds, only_seeds=only_seeds)


def parse_experiment(
    raw: dict[str, Any],
    source: str = "experiment",
    seeds: int | None = None,
    repeats_allowed: bool = False,
    only_seeds: list[int] | None = None,
) -> ExperimentConfig:
    """Validate a parsed experiment mapping (see :func:`load_experiment`). ``repeats_allowed``:
    identical attacks or defense settings are meant (a simulation deals them out round-robin,
    so a repeat weights the mix), not merged runs."""
    try:
        config = ExperimentConfig(**raw)
    except ValidationError as err:
        raise ConfigError(format_validation(err, source)) from None
    if seeds is not None:
        if seeds < 1:
            raise ConfigError("--seeds must be >= 1")
        config = config.model_copy(update={"seeds": seeds})
    if only_seeds is not None:
        if not only_seeds:
            raise ConfigError(f"--only-seeds (empty): name seeds among 0..{config.seeds - 1}")
        config = config.model_copy(update={"only_seeds": sorted(only_seeds)})
        source = f"{source} (--only-seeds)"
    _check_seed_selection(config, source)
    _refuse_runaway_grid(config, source)
    validate_entries(config, source, repeats_allowed)
    return config


MAX_RUNS = 1_000_000
"""More runs than this in one experiment file is taken for a typo (``seeds: 100000000``)."""


def _refuse_runaway_grid(config: ExperimentConfig, source: str) -> None:
    """Count the grid's runs before making any (a runaway grid would hang while it expanded)."""
    seeds = config.seeds if config.only_seeds is None else len(config.only_seeds)  # counted, never listed
    runs = len(config.datasets) * len(config.targets) * len(config.attacks) * len(config.defenses) * seeds
    for values in config.grid.values():
        runs *= len(values)
    if runs > MAX_RUNS:
        raise ConfigError(
            f"{source}: the grid makes {runs:,} runs ({seeds:,} seeds), more than {MAX_RUNS:,}; "
            "is a value mistyped? Split a study this large into several experiment files"
        )


def run_seeds(config: ExperimentConfig) -> list[int]:
    """The seeds the grid runs: ``only_seeds`` when given, else ``0 .. seeds - 1``."""
    return list(config.only_seeds) if config.only_seeds is not None else list(range(config.seeds))


def _check_seed_selection(config: ExperimentConfig, source: str) -> None:
    chosen = config.only_seeds
    if chosen is None:
        return
    outside = [s for s in chosen if not 0 <= s < config.seeds]
    if outside:
        raise ConfigError(
            f"{source}: only_seeds {outside[:10]} outside the experiment's seeds 0..{config.seeds - 1} "
            f"(seeds: {config.seeds}, from the file or --seeds)"
        )
    twice = sorted(s for s, times in Counter(chosen).items() if times > 1)
    if twice:
        raise ConfigError(f"{source}: only_seeds names seed {twice[0]} twice")


def select_attacks(config: ExperimentConfig, names: list[str]) -> ExperimentConfig:
    """The grid restricted to the attack entries of the given attack names (``raysteal run
    --attacks``; every entry of a name is kept, e.g. all six QSD budgets of ``dfme``); the selected
    runs keep the full grid's run ids."""
    if "attack.attack" in config.grid:
        raise ConfigError(
            "--attacks: this experiment's grid varies attack.attack, so its entries' names are not its "
            "runs' attacks; select with an experiment file of the attacks wanted"
        )
    known = list(dict.fromkeys(str(a.get("attack")) for a in config.attacks))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"--attacks {','.join(names) or '(empty)'}: the experiment's attacks are {', '.join(known)}")
    return config.model_copy(update={"attacks": [a for a in config.attacks if a.get("attack") in names]})


def select_targets(config: ExperimentConfig, models: list[str]) -> ExperimentConfig:
    """The grid restricted to the targets of the given model names (``raysteal run --targets``).

    Run ids do not depend on the rest of the grid, so the selected runs are the very runs of the
    full file: running the whole file later resumes them instead of repeating them."""
    known = [t.model for t in config.targets]
    unknown = [m for m in models if m not in known]
    if unknown or not models:
        raise ConfigError(f"--targets {','.join(models) or '(empty)'}: the experiment's targets are {', '.join(known)}")
    return config.model_copy(update={"targets": [t for t in config.targets if t.model in models]})


def validate_entries(config: ExperimentConfig, source: str, repeats_allowed: bool = False) -> None:
    """Validate the free-form parts (datasets, models, attacks, defenses) against the registries."""
    # the experiment context builds on this module: imported here to break the cycle
    from raysteal.experiment.context import target_config

    # loads torch: imported where it is used, so this module loads without it
    from raysteal.models.base import make_config

    # loads torch: imported where it is used, so this module loads without it
    from raysteal.oracle.defenses import parse_defenses

    # loads torch: imported where it is used, so this module loads without it
    from raysteal.training.config import make_train_config

    known = dataset_names()
    for i, ds in enumerate(config.datasets):
        if ds.path is None and ds.name not in known:
            raise ConfigError(
                f"{source}: datasets.{i}.name: unknown dataset {ds.name!r}; known: {', '.join(known)} (or give the file as path)"
            )
        try:
            if ds.path is None:
                check_dataset_arguments(ds.name, ds.preprocess, ds.kcore, **ds.options)
            else:
                check_file_arguments(ds.path, ds.format, ds.preprocess, ds.kcore, **ds.columns)
        except RaystealError as err:
            raise ConfigError(f"{source}: datasets.{i}: {err}") from None
    _refuse_indistinct_entries(config, source, repeats_allowed)

    for i, target in enumerate(config.targets):
        try:
            model_cfg, train_cfg = target_config(target)
            make_config(model_cfg)
            make_train_config(train_cfg)
            if target.watermark is not None:
                # loads torch: imported where it is used, so this module loads without it
                from raysteal.training.target_cache import checked_watermark

                checked_watermark(target.watermark, make_config(model_cfg))
            if target.checkpoint is not None:
                _check_target_checkpoint(target)
        except RaystealError as err:
            raise ConfigError(f"{source}: targets.{i}: {err}") from None
    for i, defense in enumerate(config.defenses):
        try:
            parse_defenses(defense)
        except ConfigError as err:
            raise ConfigError(f"{source}: defenses.{i}: {err}") from None
    _check_runs(config, source)


def _check_runs(config: ExperimentConfig, source: str) -> None:
    """Each cell of the grid (after its overrides) validated into a typed run (attack against its
    target's kind); a querying attack needs a budget, and each defense setting must answer the
    list length each attack asks for."""
    # the typed run builds on this module's entries; imported here to break the cycle
    from raysteal.experiment.run import Run

    # loads torch: imported where it is used, so this module loads without it
    from raysteal.oracle.defenses import check_answer_width

    widths: dict[str, dict[int | None, str]] = {}  # defense setting -> list length asked -> an attack asking it
    for spec in expand_specs(config, seeds=1):
        if config.grid:  # an override may change what the entries above validated
            _check_overridden_run(spec, source)
        try:
            width = Run.from_spec(spec).query_width
        except ConfigError as err:
            raise ConfigError(f"{source}: attacks ({spec['attack'].get('attack')!r}): {err}") from None
        if width is not None and spec["budget"] == 0:
            raise ConfigError(
                f"{source}: budget: 0 leaves {spec['attack'].get('attack')!r} no query to make (it learns from "
                "the black box's answers); give it a budget or leave the attack out"
            )
        widths.setdefault(json.dumps(spec["defenses"], sort_keys=True, default=str), {}).setdefault(width, spec["attack"].get("attack"))
    for i, defense in enumerate(config.defenses):
        for width, attack in widths.get(json.dumps(defense, sort_keys=True, default=str), {}).items():
            try:
                if width is not None:
                    check_answer_width(defense, width)
            except ConfigError as err:
                raise ConfigError(f"{source}: defenses.{i}: {err} ({attack!r} asks for top-{width} lists)") from None


def _refuse_indistinct_entries(config: ExperimentConfig, source: str, repeats_allowed: bool = False) -> None:
    """Two dataset entries with the same name and preprocessing (differing only in options or
    k-core), or two targets with the same model, params and trained-in defenses (differing only in
    training or checkpoint), would give rows no summary can tell apart: their runs would be averaged as if
    they were seeds of one cell. Two identical attacks, defense settings or grid values would be
    the same runs, done once."""
    seen: dict[str, int] = {}
    for i, ds in enumerate(config.datasets):
        key = json.dumps([ds.name, ds.preprocess])
        if key in seen:
            raise ConfigError(
                f"{source}: datasets.{i} and datasets.{seen[key]} are both {ds.name!r} with preprocess "
                f"{ds.preprocess!r}: their rows could not be told apart; run them as separate experiments"
            )
        seen[key] = i
    seen = {}
    for i, target in enumerate(config.targets):
        # a defense trained into the target (gro, watermark) is in the rows' `defense`: another cell
        key = json.dumps([target.model, target.params, target.gro, target.watermark], sort_keys=True)
        if key in seen:
            raise ConfigError(
                f"{source}: targets.{i} and targets.{seen[key]} are both {target.model!r} with the same params: "
                "their rows could not be told apart; run them as separate experiments"
            )
        seen[key] = i
    # identical entries would be one run under one id, silently merged
    repeatable = [] if repeats_allowed else [("attacks", config.attacks), ("defenses", config.defenses)]
    for section, entries in (*repeatable, *((f"grid.{key}", values) for key, values in config.grid.items())):
        seen = {}
        for i, entry in enumerate(entries):
            key = json.dumps(entry, sort_keys=True, default=str)
            if key in seen:
                raise ConfigError(
                    f"{source}: {section}.{i} repeats {section}.{seen[key]} ({key}): the two would be one run; "
                    "remove one, or make them differ"
                )
            seen[key] = i


def _check_overridden_run(run: dict[str, Any], source: str) -> None:
    """A run after its ``grid`` overrides: split, target params, K and budget as strictly as the
    top-level keys (the error names the grid)."""
    # the experiment context builds on this module: imported here to break the cycle
    from raysteal.experiment.context import target_config

    # loads torch: imported where it is used, so this module loads without it
    from raysteal.models.base import make_config

    where = f"{source}: grid (run {run['dataset']['name']}/{run['target']['model']}/{run['attack'].get('attack')})"
    try:
        SplitConfig(**run["split"])
    except ValidationError as err:
        raise ConfigError(f"{where}: split.{describe_validation(err)}") from None
    try:
        make_config(target_config(TargetEntry(**run["target"]))[0])
    except RaystealError as err:
        raise ConfigError(f"{where}: target: {err}") from None
    k, budget = run["k"], run["budget"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{where}: k must be an integer >= 1, got {k!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
        raise ConfigError(f"{where}: budget must be an integer >= 0 or null (unlimited), got {budget!r}")


def _check_target_checkpoint(target: TargetEntry) -> None:
    """A checkpoint target: the file is ours and holds the named model; it fixes the model, so
    ``params`` and ``train`` would be silently ignored and are refused."""
    # loads torch: imported where it is used, so this module loads without it
    from raysteal.models.base import model_class

    # loads torch: imported where it is used, so this module loads without it
    from raysteal.training.checkpoint import read_checkpoint

    if target.params or target.train:
        raise ConfigError("checkpoint: a checkpoint fixes the model and its training; drop params/train")
    if target.checkpoint is None:  # the caller checks checkpoint targets only
        raise ConfigError("checkpoint: no checkpoint file named")
    try:
        spec = read_checkpoint(target.checkpoint)["spec"]
    except DataFileError as err:  # missing, unreadable or not ours: named, before any work starts
        raise ConfigError(f"checkpoint: {err}") from None
    saved = spec["config"]["model"]
    if model_class(saved).name != model_class(target.model).name:
        raise ConfigError(f"checkpoint: {target.checkpoint} holds a {saved!r} model, not {target.model!r}")


SEQUENTIAL_CALIBRATION = "popularity"
"""The popularity floor is the one attack name shared by collaborative and sequential targets."""


def is_sequential_target(model: str) -> bool:
    """Whether the registered model ``model`` is queried by item sequence (SASRec, NARM, ...)."""
    # loads torch: imported where it is used, so this module loads without it
    from raysteal.models.base import model_class

    return bool(getattr(model_class(model), "sequential", False))


def apply_override(run: dict[str, Any], key: str, value: Any) -> None:
    """Set one grid key (``split.x``, ``target.x`` (a model parameter), ``attack.x``, ``k``, ``budget``,
    or ``split`` / ``attack`` with a mapping of settings) in a run's JSON form."""
    section, _, field = key.partition(".")
    if section in ("k", "budget"):
        run[section] = value
    elif not field:  # a mapping of settings of the section, set together
        run[section] = {**run[section], **value}
    elif section == "target":
        run["target"] = {**run["target"], "params": {**run["target"].get("params", {}), field: value}}
    else:
        run[section] = {**run[section], field: value}


def expand_specs(config: ExperimentConfig, seeds: int | None = None) -> list[dict[str, Any]]:
    """Every run of the grid in its JSON form (dataset, target, attack, defenses, split, k, budget,
    seed), as the grid writes it: :func:`raysteal.experiment.run.expand_runs` validates each into a
    :class:`~raysteal.experiment.run.Run` and hashes this form for the run's id."""
    grid_keys = list(config.grid)
    combos = list(itertools.product(*(config.grid[k] for k in grid_keys))) or [()]
    runs = []
    for ds, target, attack, defenses, combo in itertools.product(config.datasets, config.targets, config.attacks, config.defenses, combos):
        base = {
            "experiment": config.experiment,
            "dataset": ds.model_dump(),
            "target": target.model_dump(),
            "attack": dict(attack),
            "defenses": list(defenses),
            "split": config.split.model_dump(),
            "k": config.k,
            "budget": config.budget,
            "query_cache": config.query_cache,
        }
        for key, value in zip(grid_keys, combo):
            apply_override(base, key, value)
        # collaborative attacks ask the black box for lists of the experiment's K; sequential ones
        # keep their own list length (Yue et al.: top-100) and are scored at K
        if "k" not in base["attack"] and not is_sequential_target(base["target"]["model"]):
            base["attack"] = {**base["attack"], "k": base["k"]}
        for seed in run_seeds(config) if seeds is None else range(seeds):
            runs.append({**base, "seed": seed})
    return runs
