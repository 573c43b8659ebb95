"""Typed, validated training hyperparameters shared by every model (round-trip to JSON)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import ConfigDict, Field

from raysteal.config_numbers import NumbersAreNotBooleans
from raysteal.errors import ConfigError, describe_validation


class TrainConfig(NumbersAreNotBooleans):
    """How the generic trainer fits a model. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(20, ge=1, description="maximum passes over the training log")
    batch_size: int = Field(2048, ge=1, description="training batch size (rows the sampler yields)")
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="adamw; or sgd: vanilla SGD (no momentum), as He et al. fine-tune a pre-trained NeuMF (§3.4.1)"
    )
    lr: float = Field(1e-3, gt=0.0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay (sgd: L2 penalty)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    grad_clip: float | None = Field(None, gt=0.0, description="max gradient norm (None: no clipping)")
    early_stopping: bool = Field(
        True, description="stop when validation NDCG@10 stops improving and restore the best weights (else keep the last)"
    )
    patience: int = Field(3, ge=1, description="validations without improvement before stopping")
    eval_every: int = Field(1, ge=1, description="validate every this many epochs")
    eval_users: int | None = Field(None, ge=1, description="validate on a seeded subsample of users")
    min_epochs: int = Field(1, ge=1, description="never stop before this many epochs")
    min_steps: int | None = Field(
        None,
        ge=1,
        description=(
            "never stop before this many optimiser steps (the same budget on a small log, whose epochs are few steps, "
            "as on a large one); None: no such floor"
        ),
    )
    min_delta: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description=(
            "a validation resets patience only when it beats the best so far by this relative margin (0.01: 1%), so "
            "noise does not keep a flat curve training; the best weights are kept whatever the margin"
        ),
    )
    reference_steps_per_epoch: int | None = Field(
        None,
        ge=1,
        description=(
            "the optimiser steps per epoch the epoch counts are set for (a preset's reference log): on a log with fewer "
            "steps per epoch, epochs, min_epochs and patience grow by the ratio, so a small dataset gets the same budget "
            "in steps and waits as many steps for an improvement, validated as often in epochs; None: the counts as given"
        ),
    )
    refit: bool = Field(
        False,
        description=(
            "after early stopping, train again from the same start on the training rows plus each user's validation "
            "item, for the epochs validation chose (the parts of a pre-trained model too), and return that model: "
            "the test item is then the only one held out, as in He et al. 2017's protocol, without choosing on it"
        ),
    )
    max_seconds: float | None = Field(
        None, gt=0.0, description="time box: stop after the epoch in which training passes this many seconds (validated, best weights kept)"
    )
    max_batches_per_epoch: int | None = Field(None, ge=1, description="truncate epochs (smoke tests)")
    amp: Literal["auto", "bf16", "off"] = Field("auto", description="bf16 autocast: auto = on a GPU")


EPOCH_COUNTS = ("epochs", "min_epochs", "eval_every", "patience")
"""The settings that count epochs or validations: one a user sets is taken as given, and so are
the others (:func:`with_overrides`)."""

SCALED_COUNTS = ("epochs", "min_epochs", "patience")
"""What :func:`scaled_to_log` scales: the budget, the floor before stopping and the wait for an
improvement (validations at the same epoch spacing: a small log's curve can peak within a few
hundred steps, as BPR on Steam-200k's target half does at epoch 5 of 30 steps each)."""


def scaled_to_log(config: TrainConfig, steps_per_epoch: int, users: int | None = None) -> TrainConfig:
    """The config a log of ``steps_per_epoch`` optimiser steps per epoch (and ``users`` users)
    trains with: with a ``reference_steps_per_epoch`` above it, ``epochs``, ``min_epochs`` and
    ``patience`` times the ratio (rounded up), so the budget, the floor before stopping and the
    wait for an improvement are the same in steps as on the reference log, while validations keep
    their epoch spacing (more of them: an early peak is still seen, and the best weights kept);
    ``reference_steps_per_epoch`` is resolved away (``None``) either way, so a log at or above the
    reference trains, and is keyed, exactly as without it. Likewise an ``eval_users`` sample at
    least as large as the log's ``users`` validates on every user, and resolves to ``None``."""
    resolved: dict[str, Any] = {}
    if users is not None and config.eval_users is not None and config.eval_users >= users:
        resolved["eval_users"] = None
    if config.reference_steps_per_epoch is not None:
        resolved["reference_steps_per_epoch"] = None
        ratio = epoch_scale(config, steps_per_epoch)
        if ratio > 1.0:
            resolved.update({name: math.ceil(getattr(config, name) * ratio) for name in SCALED_COUNTS})
    return config.model_copy(update=resolved) if resolved else config


def epoch_scale(config: TrainConfig, steps_per_epoch: int) -> float:
    """How much :func:`scaled_to_log` multiplies the epoch counts by (1.0: not at all)."""
    reference = config.reference_steps_per_epoch
    return 1.0 if reference is None else max(1.0, reference / max(int(steps_per_epoch), 1))


def with_overrides(preset: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A preset's train settings with a user's overrides. Epoch counts the user sets are taken as
    given: the preset's ``reference_steps_per_epoch`` (which would scale them and the patience) is
    dropped then, unless the user sets that too."""
    merged = {**preset, **overrides}
    if any(name in overrides for name in EPOCH_COUNTS) and "reference_steps_per_epoch" not in overrides:
        merged.pop("reference_steps_per_epoch", None)
    return merged


def for_chosen_epochs(epochs: int) -> dict[str, Any]:
    """Train-config overrides that train exactly ``epochs`` epochs, a count an earlier early
    stopping chose (already scaled to the log, so not scaled again): no early stopping, no floor.
    What a refit (:mod:`raysteal.training.refit`) and a target trained on every interaction
    (``split.target_training: whole``) train with."""
    return {"epochs": int(epochs), "early_stopping": False, "min_epochs": 1, "min_steps": None, "reference_steps_per_epoch": None}


def make_train_config(config: dict[str, Any] | TrainConfig | None = None, **overrides: Any) -> TrainConfig:
    """Validate a dict (plus keyword overrides) into a :class:`TrainConfig`; errors name the key."""
    if isinstance(config, TrainConfig):
        config = config.model_dump()
    try:
        return TrainConfig(**{**(config or {}), **overrides})
    except Exception as err:  # pydantic.ValidationError names the offending key
        raise ConfigError(f"invalid train config: {describe_validation(err)}") from None
