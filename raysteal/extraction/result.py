"""The one entry point that runs a sequential recipe; what it returns is every attack's
:class:`~raysteal.attacks.result.AttackResult` (its ``clone`` is the distilled student, also
readable as ``student``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from raysteal.attacks.registry import get_recipe
from raysteal.attacks.result import AttackResult
from raysteal.extraction.config import ExtractionConfigBase, make_extraction_config
from raysteal.extraction.types import SequenceKnowledge
from raysteal.oracle.protocol import BlackBoxClient


def run_extraction(
    config: ExtractionConfigBase | dict[str, Any],
    knowledge: SequenceKnowledge,
    client: BlackBoxClient,
    *,
    seed: int,
    device: str = "cpu",
    on_epoch: Callable[[int, dict[str, float]], bool | None] | None = None,
    progress: bool = False,
    workdir: str | os.PathLike | None = None,
    phase_cache: str | os.PathLike | None = None,
) -> AttackResult:
    """Validate ``config`` and run its registered recipe with ``knowledge`` and the query ``client``.

    ``workdir`` (the run's own directory) goes to resumable recipes (DFME, BAHSD), which keep
    their gathered data and student state there and go on from them after a crash; other
    recipes start over. ``phase_cache`` (a directory shared by the runs of a results directory)
    goes to recipes whose first training phases never see the target (Zhu et al.'s on sequential
    targets), which train those once for every run that repeats them."""
    cfg = make_extraction_config(config)
    recipe = get_recipe(cfg.attack, cfg.family)
    extra: dict[str, Any] = {"workdir": workdir} if recipe.resumable else {}
    if recipe.shares_phases and phase_cache is not None:
        extra["phase_cache"] = phase_cache
    return recipe.fn(cfg, knowledge, client, seed=seed, device=device, on_epoch=on_epoch, progress=progress, **extra)
