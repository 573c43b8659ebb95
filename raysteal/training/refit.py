"""Refit: train again, on the validation items too, for the epochs validation chose.

Leave-one-out holds out two items a user: the last (test) and the one before it (validation, for
early stopping). He et al. 2017 (§4.1) hold out only the test item and train on everything else,
and in a sequence of ratings the item before the test one is the most telling about it: on ML-1M,
GMF with f = 32 gains about 0.016 HR@10 (100 negatives) from it (``benchmarks/holdout_protocol.py``). A refit trains on that item
without choosing anything on the test one: the first pass early-stops on validation as usual (the choice never sees the test
item); then the model starts again from the same initial weights (and seeds) and trains on the
training rows plus each user's validation item for exactly the epochs the first pass chose —
each pre-trained part (NeuMF's GMF and MLP, §3.4.1) for its own chosen epochs, fused as before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from raysteal.data.splits import LeaveOneOut, with_validation_items
from raysteal.models.base import Recommender
from raysteal.training.config import TrainConfig, for_chosen_epochs, make_train_config
from raysteal.training.pretrain import pretrain, remove_part_states, wants_pretraining


def refit_state_path(state_path: str | os.PathLike | None) -> Path | None:
    """Where the refit keeps its own per-epoch state (``<state>.refit``)."""
    return None if state_path is None else Path(f"{state_path}.refit")


def refit_on_validation_items(
    model: Recommender,
    split: LeaveOneOut,
    config: TrainConfig,
    chosen: dict[str, Any],
    initial: dict[str, torch.Tensor],
    *,
    seed: int,
    device: torch.device,
    state_path: str | os.PathLike | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    objective: Callable[[Recommender, dict[str, torch.Tensor]], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Reset ``model`` to ``initial`` and train it on ``split``'s training rows plus validation
    items for ``chosen["epochs"]`` epochs (``config``: the first pass's train config, epoch counts
    already scaled to the log), its pre-trained parts for ``chosen["part_epochs"]``; returns
    ``{"epochs", "part_epochs", "train_seconds"}``. With 0 epochs (the fused start was the best) the
    parts are trained and fused, and nothing more. ``objective``: the loss the first pass trained
    with, if not the model's own (GRO)."""
    from raysteal.training.trainer import fit  # fit calls this module: imported here to break the cycle

    t0 = time.perf_counter()
    epochs = int(chosen["epochs"])
    part_epochs = {name: int(n) for name, n in chosen.get("part_epochs", {}).items()}
    merged = with_validation_items(split)
    model.load_state_dict(initial)
    state = refit_state_path(state_path)
    tagged = (
        None
        if on_epoch is None
        else (lambda log: on_epoch({**log, "phase": " ".join(["refit", *([log["phase"]] if "phase" in log else [])])}))
    )
    if epochs >= 1:
        fixed = make_train_config(config, **for_chosen_epochs(epochs), refit=False, max_seconds=None)
        fit(
            model,
            merged,
            fixed,
            seed=seed,
            device=device,
            progress=False,
            state_path=state,
            restart_if_unusable=state is not None,
            on_epoch=tagged,
            part_epochs=part_epochs or None,
            objective=objective,
        )
        if state is not None:
            state.unlink(missing_ok=True)  # the refit is done: the model holds what remains
    elif wants_pretraining(model):
        pretrain(model, merged, config, seed=seed, device=device, state_path=state, on_epoch=tagged, part_epochs=part_epochs)
        remove_part_states(model, state)
    model.eval()
    return {"epochs": epochs, "part_epochs": part_epochs, "train_seconds": time.perf_counter() - t0}
