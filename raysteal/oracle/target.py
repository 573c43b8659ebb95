"""How a black box is built: a trained target model (object or checkpoint), its seen items,
and its defenses. Both the in-process oracle and the ``TargetServer`` actor build from this."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raysteal.errors import ConfigError
from raysteal.oracle.core import OracleCore
from raysteal.oracle.defenses import build_defenses
from raysteal.oracle.engine import RankingEngine
from raysteal.training.checkpoint import load_checkpoint


@dataclass
class TargetSpec:
    """A deployable target. Give ``model`` (a ``Recommender``) or ``checkpoint`` (a path).

    ``seen_indptr``/``seen_items``: each user's training items (CSR), excluded from answers of a
    collaborative target; ``item_popularity`` feeds the popular-mixing defense.
    """

    model: Any = None
    checkpoint: str | None = None
    seen_indptr: np.ndarray | None = None
    seen_items: np.ndarray | None = None
    item_popularity: np.ndarray | None = None
    exclude_seen: bool = True
    defenses: list[dict] = field(default_factory=list)
    name: str = "target"

    @classmethod
    def from_training_log(cls, model: Any, train, **kwargs) -> TargetSpec:
        """Spec for a model trained on ``train`` (an ``Interactions``): seen items and popularity from it."""
        return cls(
            model=model,
            seen_indptr=train.indptr,
            seen_items=train.items,
            item_popularity=train.item_counts,
            **kwargs,
        )

    def load_model(self):
        if self.model is not None and self.checkpoint is None:
            return self.model
        if self.model is None and self.checkpoint is not None:
            model, _meta = load_checkpoint(Path(self.checkpoint))
            return model
        raise ConfigError("a TargetSpec needs exactly one of model or checkpoint")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_oracle_core(
    spec: TargetSpec,
    state_dir: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
    secret: bytes | None = None,
    session: str | None = None,
) -> OracleCore:
    """Model + seen items + defenses → an ``OracleCore`` (``secret``: its accounts' keys; random
    when None; ``session``: names its query log, see :class:`OracleCore`)."""
    model = spec.load_model()
    engine = RankingEngine(
        model,
        seen_indptr=spec.seen_indptr,
        seen_items=spec.seen_items,
        exclude_seen=spec.exclude_seen,
        device=device or default_device(),
    )
    return OracleCore(
        engine, build_defenses(spec.defenses, spec.item_popularity), state_dir=state_dir, seed=seed, secret=secret, session=session
    )
