"""The one registry of attack recipes, collaborative and sequential: name → :class:`Recipe` (its
family, config class, function, the knowledge it needs, whether it resumes).

A recipe registers with ``@register_recipe`` beside its function, in the file of its source paper
(``raysteal/attacks/zhu2023.py``, ``raysteal/extraction/dfme.py``, ...); its family is its config
class's ``family`` (``AttackConfig``: collaborative, ``ExtractionConfigBase``: sequential). Each
family's package imports its recipe files, so importing the package registers them.

This module imports no recipe and nothing of either family: both build on it. It names each
family's package (:data:`FAMILIES`) and imports that package by name only when a lookup must know
the family's recipes — to list them, or to tell a user that a name attacks the other kind of target.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raysteal.errors import ConfigError

KNOWLEDGE = ("target_data", "auxiliary", "queries")
"""What a recipe may need: the attacker's own target data (interactions, or real sequences), an
auxiliary data set (or model), and queries to the black box."""


@dataclass(frozen=True)
class Family:
    """A kind of target and the package whose import registers the recipes that attack it."""

    package: str
    targets: str


FAMILIES: dict[str, Family] = {
    "collaborative": Family("raysteal.attacks", "BPR-MF, NeuMF, LMF"),
    "sequential": Family("raysteal.extraction", "SASRec, BERT4Rec, GRU4Rec, NARM, STAMP"),
}


@dataclass(frozen=True)
class Recipe:
    """One registered attack.

    A collaborative recipe is ``fn(config, knowledge, client, ctx) -> clone``
    (:func:`raysteal.attacks.run_attack` runs it); a sequential one is
    ``fn(config, knowledge, client, *, seed, device, on_epoch, progress) -> AttackResult``, and a
    ``resumable`` one also takes ``workdir`` (:func:`raysteal.extraction.run_extraction`), and
    one that ``shares_phases`` takes ``phase_cache``, a directory where it keeps the training
    phases that never see the target (:mod:`raysteal.extraction.phase_cache`). ``needs`` ⊆
    :data:`KNOWLEDGE`."""

    name: str
    family: str
    config_cls: type
    fn: Callable[..., Any]
    needs: tuple[str, ...]
    summary: str
    resumable: bool = False
    shares_phases: bool = False


_RECIPES: dict[str, Recipe] = {}


def register_recipe(
    name: str, config: type, *, needs: tuple[str, ...], summary: str, resumable: bool = False, shares_phases: bool = False
) -> Callable[[Callable], Callable]:
    """Decorator registering a recipe under ``name``, validated by ``config`` (whose ``family``
    is the recipe's); ``needs`` ⊆ :data:`KNOWLEDGE`; ``resumable``: it takes a ``workdir`` and
    goes on from what an earlier attempt saved there (:mod:`raysteal.extraction.resume`);
    ``shares_phases``: it takes a ``phase_cache`` directory (:mod:`raysteal.extraction.phase_cache`)."""
    family = getattr(config, "family", None)
    if family not in FAMILIES:
        raise ValueError(f"attack {name!r}: {config.__name__}.family is {family!r}, not one of {sorted(FAMILIES)}")
    unknown = set(needs) - set(KNOWLEDGE)
    if unknown:
        raise ValueError(f"unknown knowledge {sorted(unknown)} for attack {name!r}")

    def wrap(fn: Callable) -> Callable:
        if name in _RECIPES:
            raise ValueError(f"attack {name!r} registered twice")
        _RECIPES[name] = Recipe(name, family, config, fn, tuple(needs), summary, resumable, shares_phases)
        return fn

    return wrap


def _families(family: str | None) -> list[str]:
    """``[family]`` (every family for ``None``), each one's recipes registered."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown recipe family {family!r}; known: {', '.join(FAMILIES)}")
    chosen = list(FAMILIES) if family is None else [family]
    for each in chosen:
        importlib.import_module(FAMILIES[each].package)  # registers its recipes (at once if already imported)
    return chosen


def recipe_names(family: str | None = None) -> list[str]:
    """Registered names of ``family``'s recipes (every family's for ``None``), sorted."""
    chosen = _families(family)
    return sorted(name for name, recipe in _RECIPES.items() if recipe.family in chosen)


def attack_names() -> list[str]:
    """Registered names of the collaborative recipes, sorted."""
    return recipe_names("collaborative")


def get_recipe(name: str, family: str | None = None) -> Recipe:
    """The recipe named ``name`` (of ``family``, when given); a one-line ``ConfigError`` naming
    it and the known ones otherwise — or, for a recipe of the other family, which targets it
    attacks."""
    recipe = _RECIPES.get(name)
    if recipe is not None and family in (None, recipe.family):
        return recipe
    known = ", ".join(recipe_names(family))
    _families(None)
    owner = _RECIPES.get(name)
    if family is None:
        raise ConfigError(f"attack: unknown attack {name!r}; known attacks: {known}")
    if owner is not None and owner.family != family:
        twin_recipe = _RECIPES.get(f"seq_{name}")
        twin = f"; Zhu et al.'s on sequences is 'seq_{name}'" if twin_recipe is not None and twin_recipe.family == family else ""
        raise ConfigError(
            f"attack: {name!r} attacks {owner.family} targets ({FAMILIES[owner.family].targets}); "
            f"this target is {family}, whose attacks are: {known}{twin}"
        )
    if family == "sequential":
        raise ConfigError(f"attack: unknown sequential attack {name!r}; known: {known}")
    raise ConfigError(f"attack: unknown attack {name!r}; known attacks: {known}")
