"""Pre-training: the parts a model starts from, each trained first by the generic trainer.

A model that wants pre-training (NeuMF with ``pretrain``: He et al. 2017 §3.4.1) names its parts
with ``pretraining() -> {name: model config}`` and the train-config overrides they use with
``pretraining_settings(train_config)``, and takes them back with ``fuse_pretrained({name: model})``.
:func:`raysteal.training.fit` calls :func:`pretrain` when it starts such a model from scratch (not
when it resumes a saved state: those weights already hold the fused parts). Each part is trained
with :func:`fit` itself — validation, early stopping, best weights — from its own seed; with a
``state_path`` each keeps its own per-epoch state beside it (``<state>.pretrain-<name>``), so a
killed pre-training goes on from its last epoch too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from raysteal.data.splits import LeaveOneOut
from raysteal.models.base import Recommender
from raysteal.training.config import TrainConfig, for_chosen_epochs, make_train_config

if TYPE_CHECKING:  # only in annotations (typing.TypeIs is Python 3.13's)
    from typing_extensions import TypeIs


class Pretrainable(Protocol):
    """A model that names parts to pre-train (see the module docstring)."""

    @property
    def num_users(self) -> int: ...

    @property
    def num_items(self) -> int: ...

    def pretraining(self) -> dict[str, Any]: ...

    def pretraining_settings(self, train: TrainConfig) -> dict[str, Any]: ...

    def fuse_pretrained(self, parts: dict[str, Recommender]) -> None: ...


def wants_pretraining(model: object) -> TypeIs[Pretrainable]:
    """Whether ``model`` names parts to pre-train."""
    parts = getattr(model, "pretraining", None)
    return callable(parts) and bool(parts())


def part_state_path(state_path: str | os.PathLike | None, name: str) -> Path | None:
    """Where the pre-training of part ``name`` keeps its state (``None`` without a ``state_path``)."""
    return None if state_path is None else Path(f"{state_path}.pretrain-{name}")


def part_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th pre-trained part (independent of the main training's streams)."""
    state = np.random.SeedSequence([int(seed), 0x9E7A1, index]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def pretrain(
    model: Pretrainable,
    split: LeaveOneOut,
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    state_path: str | os.PathLike | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    part_epochs: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Train each part ``model.pretraining()`` names and fuse them into ``model``; returns a summary,
    ``{"parts": {name: {best_epoch, best_valid_ndcg@10, epochs_run, train_seconds}}}``.
    ``part_epochs``: train each named part exactly that many epochs, without early stopping (a
    refit for the epochs an earlier validation chose)."""
    # the trainer imports this module (fit calls pretrain): imported here to break the cycle
    from raysteal.training.trainer import fit, seeded_model

    # a part never refits on its own: a refit of the model refits its parts (``part_epochs``)
    settings = make_train_config(config, **{**model.pretraining_settings(config), "refit": False})
    parts: dict[str, Recommender] = {}
    summary: dict[str, Any] = {}
    for index, (name, part_config) in enumerate(model.pretraining().items()):
        part_seed_ = part_seed(seed, index)
        part = seeded_model(part_config, model.num_users, model.num_items, part_seed_)
        part_settings = settings
        if part_epochs is not None and name in part_epochs:
            part_settings = make_train_config(settings, **for_chosen_epochs(max(1, int(part_epochs[name]))))
        report = None if on_epoch is None else (lambda log, name=name: on_epoch({**log, "phase": f"pretrain {name}"}))
        result = fit(
            part,
            split,
            part_settings,
            seed=part_seed_,
            device=device,
            progress=False,
            state_path=part_state_path(state_path, name),
            restart_if_unusable=state_path is not None,
            on_epoch=report,
        )
        parts[name] = part
        summary[name] = {
            "best_epoch": result.best_epoch,
            "best_valid_ndcg@10": result.best_valid_ndcg,
            "epochs_run": result.epochs_run,
            "train_seconds": result.train_seconds,
        }
    model.fuse_pretrained(parts)
    return {"parts": summary}


def remove_part_states(model: Recommender, state_path: str | os.PathLike | None) -> None:
    """Delete the parts' saved states (once the model's own training is done)."""
    if state_path is None:
        return
    for name in getattr(model, "pretraining", dict)():
        path = part_state_path(state_path, name)
        if path is not None:
            path.unlink(missing_ok=True)
