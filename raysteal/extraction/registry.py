"""Registry of sequential extraction recipes: name → (config class, recipe function)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from raysteal.errors import ConfigError

_RECIPE_MODULES = ("raysteal.extraction.dfme", "raysteal.extraction.bahsd", "raysteal.extraction.zhu_sequential")


@dataclass(frozen=True)
class ExtractionRecipe:
    """``fn(config, knowledge, client, *, seed, device, on_epoch, progress) -> ExtractionResult``;
    a ``resumable`` recipe also takes ``workdir`` (:mod:`raysteal.extraction.resume`)."""

    name: str
    config_cls: type
    fn: Callable[..., Any]
    summary: str
    resumable: bool = False


_RECIPES: dict[str, ExtractionRecipe] = {}


def register_extraction(name: str, config_cls: type, summary: str, resumable: bool = False) -> Callable[[Callable], Callable]:
    """Decorator registering a sequential extraction recipe under ``name`` (``resumable``: it
    takes a ``workdir`` and goes on from what an earlier attempt saved there)."""

    def wrap(fn: Callable) -> Callable:
        if name in _RECIPES:
            raise ValueError(f"extraction {name!r} registered twice")
        _RECIPES[name] = ExtractionRecipe(name, config_cls, fn, summary, resumable)
        return fn

    return wrap


def _load() -> None:
    for module in _RECIPE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:  # a recipe module not written yet
            if err.name != module:
                raise


def extraction_names() -> list[str]:
    """Registered sequential extraction names, sorted."""
    _load()
    return sorted(_RECIPES)


def get_extraction(name: str) -> ExtractionRecipe:
    """The recipe named ``name``; ``ConfigError`` listing the known ones otherwise."""
    _load()
    if name not in _RECIPES:
        # imported here: the two families' registries name each other only to word this error
        from raysteal.attacks.registry import attack_names

        if name in attack_names():
            twin = f"; Zhu et al.'s on sequences is 'seq_{name}'" if f"seq_{name}" in _RECIPES else ""
            raise ConfigError(f"attack: {name!r} attacks collaborative targets (BPR-MF, NeuMF, LMF); this target is sequential, "
                              f"whose attacks are: {', '.join(sorted(_RECIPES))}{twin}")
        raise ConfigError(f"attack: unknown sequential attack {name!r}; known: {', '.join(sorted(_RECIPES))}")
    return _RECIPES[name]
