"""What a sequential extraction recipe returns, and the one entry point that runs a recipe."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from raysteal.extraction.config import ExtractionConfigBase, make_extraction_config
from raysteal.extraction.registry import get_extraction
from raysteal.extraction.types import SequenceKnowledge
from raysteal.oracle.protocol import BlackBoxClient


@dataclass
class ExtractionResult:
    """The trained student (eval mode), the queries the attack spent, and JSON-able figures
    (timings, sequences, epochs, final loss, ...) for the results row."""

    student: Any
    queries: int
    info: dict[str, Any] = field(default_factory=dict)


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
) -> ExtractionResult:
    """Validate ``config`` and run its registered recipe with ``knowledge`` and the query ``client``.

    ``workdir`` (the run's own directory) goes to resumable recipes (DFME, BAHSD), which keep
    their gathered data and student state there and go on from them after a crash; other
    recipes start over."""
    cfg = make_extraction_config(config)
    recipe = get_extraction(cfg.attack)
    resume = {"workdir": workdir} if recipe.resumable else {}
    return recipe.fn(cfg, knowledge, client, seed=seed, device=device, on_epoch=on_epoch, progress=progress, **resume)
