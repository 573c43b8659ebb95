"""The attack registry: recipe name → recipe function and the knowledge it needs.

Recipes register with ``@register_attack`` where they are defined; importing ``raysteal.attacks``
(which any import of this module does first) imports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from raysteal.errors import ConfigError

KNOWLEDGE = ("target_data", "auxiliary", "queries")


@dataclass(frozen=True)
class Recipe:
    """One registered attack: ``fn(config, knowledge, client, ctx) -> clone``."""

    name: str
    fn: Callable
    needs: tuple[str, ...]
    summary: str


_RECIPES: dict[str, Recipe] = {}


def register_attack(name: str, needs: tuple[str, ...], summary: str) -> Callable[[Callable], Callable]:
    """Decorator registering a recipe under ``name``; ``needs`` ⊆ ``KNOWLEDGE``."""
    unknown = set(needs) - set(KNOWLEDGE)
    if unknown:
        raise ValueError(f"unknown knowledge {sorted(unknown)} for attack {name!r}")

    def wrap(fn: Callable) -> Callable:
        if name in _RECIPES:
            raise ValueError(f"attack {name!r} registered twice")
        _RECIPES[name] = Recipe(name, fn, tuple(needs), summary)
        return fn

    return wrap


def attack_names() -> list[str]:
    """Registered attack names, sorted."""
    return sorted(_RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe named ``name``; ``ConfigError`` naming it (and the known ones) otherwise."""
    if name not in _RECIPES:
        # imported here: the two families' registries name each other only to word this error
        from raysteal.extraction.registry import extraction_names

        if name in extraction_names():
            raise ConfigError(f"attack: {name!r} attacks sequential targets (SASRec, BERT4Rec, GRU4Rec, NARM, STAMP); this target "
                              f"is collaborative, whose attacks are: {', '.join(sorted(_RECIPES))}")
        raise ConfigError(f"attack: unknown attack {name!r}; known attacks: {', '.join(sorted(_RECIPES))}")
    return _RECIPES[name]
