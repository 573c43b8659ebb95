"""One run of an experiment grid, typed: :class:`Run`, and :func:`expand_runs`, which builds
every run of an :class:`~raysteal.experiment.config.ExperimentConfig` and validates each once.

A run is one cell of the grid (dataset × target × attack × defenses × grid values) at one seed.
Its ``spec`` is the JSON form the grid wrote (the attack entry as the user gave it, after the
grid's overrides); the run's id hashes it (:func:`raysteal.results.store.run_id`), so ids — and
the results directories that resume by them — are what they were when runs were plain dicts.
The other fields are the same settings validated: the dataset and target entries, the split, the
attack's own config class chosen by its name and the target's kind, the defenses as their specs.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from raysteal.errors import ConfigError
from raysteal.experiment.config import (
    SEQUENTIAL_CALIBRATION,
    DatasetEntry,
    ExperimentConfig,
    SplitConfig,
    TargetEntry,
    apply_override,
    expand_specs,
    is_sequential_target,
)
from raysteal.results.store import canonical_run, run_id, run_ids


class PopularityFloor(BaseModel):
    """The popularity floor of a sequential target: the most popular unseen items, no query."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    attack: Literal["popularity"] = "popularity"

    @property
    def uses_queries(self) -> bool:
        return False


if TYPE_CHECKING:
    from raysteal.attacks.base import AttackConfig
    from raysteal.extraction.config import ExtractionConfigBase
    from raysteal.oracle.defenses import DefenseSpecBase

    AttackSettings = AttackConfig | ExtractionConfigBase | PopularityFloor
    DefenseSettings = DefenseSpecBase
else:  # validated by :func:`attack_settings` / :func:`parse_defenses`; pydantic keeps the instances
    AttackSettings = Any
    DefenseSettings = Any


class SimulationRole(BaseModel):
    """Which attacker of which simulation a run is (``raysteal simulate``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    attacker: int
    server: int


class TuneTrial(BaseModel):
    """Which trial of which sweep a run is (``raysteal tune``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sweep: str
    trial: str


def attack_settings(attack: dict[str, Any], sequential: bool) -> AttackSettings:
    """``attack`` validated into its recipe's config class for a target of this kind (one-line
    ``ConfigError`` otherwise); the popularity floor of a sequential target takes no options."""
    if not sequential:
        # loads torch: imported where it is used, so this module loads without it
        from raysteal.attacks import make_attack_config

        return make_attack_config(attack)
    if attack.get("attack") == SEQUENTIAL_CALIBRATION:
        extra = set(attack) - {"attack"}
        if extra:
            raise ConfigError(f"popularity takes no options, got {sorted(extra)}")
        return PopularityFloor()
    # loads torch: imported where it is used, so this module loads without it
    from raysteal.extraction import make_extraction_config

    return make_extraction_config(attack)


class Run(BaseModel):
    """One run: what to attack, how, under which defenses, scored how, at which seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: dict[str, Any] = Field(description="the JSON form of the run (the grid's dict); its hash is the run id")
    experiment: str
    dataset: DatasetEntry
    target: TargetEntry
    attack: AttackSettings
    defenses: tuple[DefenseSettings, ...]
    split: SplitConfig
    k: int
    budget: int | None
    query_cache: bool
    seed: int
    sequential: bool = Field(description="the target is queried by item sequence (SASRec, NARM, ...)")
    simulation: SimulationRole | None = None
    tune: TuneTrial | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Run:
        """Validate a run's JSON form (what :func:`expand_runs` builds, or a saved one)."""
        # loads torch: imported where it is used, so this module loads without it
        from raysteal.oracle.defenses import parse_defenses

        spec = copy.deepcopy(spec)
        target = TargetEntry(**spec["target"])
        sequential = is_sequential_target(target.model)
        return cls(
            spec=spec,
            experiment=spec["experiment"],
            dataset=DatasetEntry(**spec["dataset"]),
            target=target,
            attack=attack_settings(spec["attack"], sequential),
            defenses=tuple(parse_defenses(spec["defenses"])),
            split=SplitConfig(**spec["split"]),
            k=spec["k"],
            budget=spec["budget"],
            query_cache=bool(spec.get("query_cache", False)),
            seed=int(spec["seed"]),
            sequential=sequential,
            simulation=spec.get("simulation"),
            tune=spec.get("tune"),
        )

    @property
    def id(self) -> str:
        """The run's id (:func:`raysteal.results.store.run_id` of its spec, with the target's
        revised preset settings where it has any: :func:`identity_spec`)."""
        return run_id(identity_spec(self.spec))

    @property
    def ids(self) -> list[str]:
        """:attr:`id` first, then the ids earlier versions gave the same run."""
        return run_ids(identity_spec(self.spec))

    @property
    def target_settings(self) -> dict[str, Any]:
        """The target's ``params`` as its rows name them (``target_params``): the file's, less a
        pinned earlier default that ids leave out, plus the revised preset settings it resolves to
        (:func:`identity_spec`), so rows of two different targets never share a name."""
        params = canonical_run({"target": {"params": dict(self.target.params)}})["target"]["params"]
        return {**params, **identity_spec(self.spec)["target"].get("revised", {})}

    @property
    def attack_name(self) -> str:
        return str(self.attack.attack)

    @property
    def defense_settings(self) -> list[dict[str, Any]]:
        """The defenses as the experiment wrote them (rows and server names carry this form)."""
        return self.spec["defenses"]

    @property
    def head_fraction(self) -> float:
        return self.split.head_fraction

    @property
    def query_width(self) -> int | None:
        """The length of the lists the attack asks the black box for (its ``k``), or ``None`` when
        it makes no query (so a budget of 0 would leave it nothing to learn from)."""
        if isinstance(self.attack, PopularityFloor):
            return None
        if self.sequential:
            return self.attack.k if getattr(self.attack, "uses_queries", False) else None
        # loads torch: imported where it is used, so this module loads without it
        from raysteal.attacks.registry import get_recipe

        return self.attack.k if "queries" in get_recipe(self.attack.attack).needs else None

    @property
    def uses_real_sequences(self) -> bool:
        """A sequential attack that holds real users' sequences (Zhu et al.'s on sequences, BAHSD's real setting)."""
        return bool(getattr(self.attack, "uses_real_sequences", False))

    def replace(self, **settings: Any) -> Run:
        """This run with top-level settings changed (``seed``, ``budget``, ``simulation``, ``tune``),
        validated again (a new id)."""
        unknown = set(settings) - {"seed", "budget", "simulation", "tune"}
        if unknown:
            raise ValueError(f"Run.replace: not a top-level setting: {sorted(unknown)}")
        return Run.from_spec({**self.spec, **settings})

    def override(self, values: dict[str, Any]) -> Run:
        """This run with grid keys (``split.x``, ``target.x``, ``attack.x``, ``k``, ``budget``,
        ``seed``) set to ``values``, validated again once all are set."""
        spec = copy.deepcopy(self.spec)
        for key, value in values.items():
            if key == "seed":
                spec["seed"] = int(value)
            else:
                apply_override(spec, key, value)
        return Run.from_spec(spec)


def identity_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """What a run's id hashes: its spec, plus ``target.revised`` when the target resolves to a
    preset setting changed since results were published
    (:func:`~raysteal.training.presets.revised_settings`): the same file then names a new target
    and gets new ids rather than the rows of the old one. A train setting the file pins at its
    earlier value is left out (the file names the earlier target, under its earlier ids)."""
    from raysteal.training.presets import revised_settings, without_pinned_earlier_train  # loads torch

    target = spec.get("target", {})
    if "model" not in target:
        return spec
    revised = revised_settings(target["model"], target.get("params") or {}, target.get("train") or {})
    if target.get("train"):  # a pinned earlier train value names the target runs had before its revision
        train = without_pinned_earlier_train(target["model"], target["train"])
        if train != target["train"]:
            target = {**target, "train": train}
    if not revised:
        return spec if target is spec.get("target") else {**spec, "target": target}
    return {**spec, "target": {**target, "revised": revised}}


def expand_runs(config: ExperimentConfig, seeds: int | None = None) -> list[Run]:
    """Every run of the grid (dataset, target, attack, defenses, split, k, budget, seed), each
    validated once; ``seeds``: that many seeds (0..seeds-1) instead of the experiment's."""
    return [Run.from_spec(spec) for spec in expand_specs(config, seeds)]
