"""The sequential recipes' view of the one attack registry (:mod:`raysteal.attacks.registry`),
for callers that look sequential recipes up by these names."""

from __future__ import annotations

from raysteal.attacks.registry import Recipe, get_recipe, recipe_names


def extraction_names() -> list[str]:
    """Registered names of the sequential recipes, sorted."""
    return recipe_names("sequential")


def get_extraction(name: str) -> Recipe:
    """The sequential recipe named ``name``; a one-line ``ConfigError`` naming the known ones
    otherwise (or, for a collaborative recipe, its sequential twin)."""
    return get_recipe(name, "sequential")
